import type { TemplateConfig } from '../config/types.js'
import { AppError, ConflictError, PoolFullError, ProviderError, ValidationError } from '../domain/errors.js'
import { newInstanceId } from '../domain/ids.js'
import { type EndReason, FREE_STATES, type Instance, isLive } from '../domain/instance.js'
import * as tr from '../domain/transitions.js'
import { LiveInstanceExistsError, type StoreTx, type WarmClaimInput, type WarmClaimResult } from '../store/store.js'
import { byReadiness } from './pool-capacity.js'
import { refuseOutsideSchedule } from './pool-warm.js'
import type { PoolCore } from './pool-core.js'

export type RequestOutcome = 'existing' | 'warm' | 'cold' | 'queued'

export interface RequestResult {
  readonly instance: Instance
  readonly outcome: RequestOutcome
  readonly queuePosition: number | null
}

export interface RequestInput {
  readonly userId: string
  readonly template?: string
  /** The requester (API key name; `dashboard` for a signed-in user): part of the session's identity. */
  readonly keyName?: string | null
  /** The user asks for themselves (the dashboard): their live session is theirs whichever requester made it. */
  readonly byOwner?: boolean
}

/** What the pool lock decided for a request that no warm instance served. */
interface Decision {
  readonly inst: Instance
  readonly outcome: RequestOutcome | 'claimed'
  /** A free instance of another template stopped to make room for this queued request. */
  readonly evict?: Instance
}

/** Who asks (the user and the requester). */
interface Who {
  readonly userId: string
  readonly keyName: string | null
}

/** Request and assignment: the user's live instance, a warm one, a new one within caps, or the queue; and release. */
export class Requests {
  readonly #claimWarm: (claim: WarmClaimInput) => Promise<WarmClaimResult>

  constructor(private readonly c: PoolCore) {
    // The store batches claims where its dialect gains by it (SQLite's group commit: src/store/warm-batcher.ts).
    this.#claimWarm = (claim) => c.d.store.claimWarm(claim, c.now())
  }

  template(name: string): TemplateConfig {
    const t = this.c.templates.get(name)
    if (!t)
      throw new ValidationError(`unknown template "${name}"`, [
        { path: '/payload/template', message: `known templates: ${[...this.c.templates.keys()].join(', ')}` },
      ])
    return t
  }

  /** Seed REQUEST_RSTUDIO: the user's live instance, a warm one, a new one within caps, or the queue. */
  async request(input: RequestInput): Promise<RequestResult> {
    const { c } = this
    c.noteRequest()
    const t = this.template(input.template ?? c.d.config.pool.defaultTemplate)
    const why = c.d.unavailable?.get(t.name)
    if (why) throw new AppError('TEMPLATE_UNAVAILABLE', `template "${t.name}" is not available: ${why}`)
    // A shared template's instances belong to no one (docs/shared-pools.md): its users open /a/<template>/.
    if (t.shared)
      throw new ValidationError(`template "${t.name}" is shared: its users open /a/${t.name}/ instead`, [
        { path: '/payload/template', message: 'a mode: shared template is not requested per user' },
      ])
    if (t.schedule) refuseOutsideSchedule(t.name, t.schedule, c.now())
    const who: Who = { userId: input.userId, keyName: input.keyName ?? null }
    const warm = await this.#warm(t, input, who)
    if (warm) return warm

    const probe = { id: undefined as string | undefined }
    let decision: Decision
    try {
      decision = await c.d.store.withPoolLock((tx) => this.#decide(tx, t, who, probe))
    } catch (err) {
      if (probe.id) c.breaker.release(t.name, probe.id)
      if (err instanceof PoolFullError) c.d.metrics?.requests.inc({ template: t.name, outcome: 'rejected' })
      if (!(err instanceof LiveInstanceExistsError)) throw err
      const again = await c.d.store.findLive(input.userId, t.name)
      if (!again) throw err
      return this.#existing(again, input, who.keyName)
    }
    // Committed: a queue check that began before the commit did not see this row.
    if (decision.outcome === 'queued') c.queue.changed()
    return this.#afterDecision(decision, input, who)
  }

  /** The user's live instance, else a warm one: one store call either way (assignWarm checks first). */
  async #warm(t: TemplateConfig, input: RequestInput, who: Who): Promise<RequestResult | undefined> {
    try {
      const claim = await this.#claimWarm({ template: t.name, userId: who.userId, keyName: who.keyName })
      if (claim.existing) return await this.#existing(claim.existing, input, who.keyName)
      if (claim.assigned) return await this.#assigned(claim.assigned)
      return undefined
    } catch (err) {
      if (!(err instanceof LiveInstanceExistsError)) throw err
      const again = await this.c.d.store.findLive(input.userId, t.name)
      if (again) return this.#existing(again, input, who.keyName)
      throw err
    }
  }

  /** A free instance was given to the user: publish, relabel, refill the warm pool. */
  #assigned(inst: Instance, log = true): Promise<RequestResult> {
    const { c } = this
    c.d.metrics?.assignments.inc({ template: inst.template, kind: 'warm' })
    // A ready instance is the user's at once; one still starting is observed when it answers (cold).
    if (inst.state === 'ready' && inst.assignedAt !== null)
      c.d.metrics?.timeToReady.observe({ template: inst.template, outcome: 'warm' }, (c.now() - inst.assignedAt) / 1000)
    // The store's claimWarm wrote the audit row; the log line is written here.
    if (log)
      c.logEvent('assigned', {
        instanceId: inst.id,
        template: inst.template,
        userId: inst.ownerId,
        kind: 'warm',
        secondsToReady: 0,
      })
    c.routes.publish(inst)
    c.lifecycle.relabelSoon(inst)
    c.background(c.capacity.topUp())
    return this.#result(inst, 'warm')
  }

  /** Inside the pool lock: the live instance, a free one not ready yet, a cold start, or the queue. */
  async #decide(tx: StoreTx, t: TemplateConfig, who: Who, probe: { id?: string }): Promise<Decision> {
    const { c } = this
    const live = await tx.findLive(who.userId, t.name)
    if (live) return { inst: live, outcome: 'existing' }
    const now = c.now()
    // A free instance that is still starting beats a cold start (issue 9): it is closer to ready.
    const claimed = await this.#claimFree(tx, t, who, now)
    if (claimed) return { inst: claimed, outcome: 'claimed' }
    // An open breaker: nothing is created or queued until a probe succeeds.
    if (c.breaker.state(t.name)?.open && !c.breaker.wouldPermit(t.name)) throw this.#providerUnavailable(t)
    const counts = await tx.countActive()
    const underTemplate = (counts.byTemplate[t.name] ?? 0) < c.maxOf(t)
    const underPool = counts.total < c.d.config.pool.maxInstances
    if (underTemplate && underPool) {
      const id = newInstanceId()
      if (c.breaker.permit(t.name, id)) probe.id = id
      const row = await c.insert(tr.newCold(id, t.name, who, now), tx)
      await this.#openAssignment(tx, row, who)
      return { inst: row, outcome: 'cold' }
    }
    if (t.whenFull === 'reject') {
      throw new PoolFullError(
        underTemplate
          ? 'the pool is at its maxInstances'
          : `template "${t.name}" is at its maxInstances (${c.maxOf(t)})`,
      )
    }
    // The pool-wide cap is reached but this template has room: a free warm instance of another
    // template makes way, so warm pools can never starve a template forever.
    let victim: Instance | undefined
    if (underTemplate && !underPool) {
      const free = await tx.listInstances({ assigned: false, states: FREE_STATES, limit: 50 })
      // Never a shared template's instance: it serves users while it has no owner.
      const candidate = free.find((f) => f.template !== t.name && !c.templates.get(f.template)?.shared)
      if (candidate) victim = await c.apply(candidate.id, tr.evict(candidate, now), tx)
    }
    const row = await c.insert(tr.newQueued(newInstanceId(), t.name, who, now), tx)
    await this.#openAssignment(tx, row, who)
    return { inst: row, outcome: 'queued', evict: victim }
  }

  async #afterDecision({ inst, outcome, evict }: Decision, input: RequestInput, who: Who): Promise<RequestResult> {
    const { c } = this
    if (outcome === 'existing') return this.#existing(inst, input, who.keyName)
    if (outcome === 'claimed') {
      await c.audit(
        inst.id,
        'assigned',
        who.keyName,
        { userId: input.userId, state: inst.state },
        { template: inst.template, kind: inst.state === 'ready' ? 'warm' : 'starting' },
      )
      return this.#assigned(inst, false)
    }
    await c.audit(
      inst.id,
      outcome === 'cold' ? 'assigned' : 'queued',
      who.keyName,
      { userId: input.userId },
      { template: inst.template, kind: outcome },
    )
    if (evict) {
      c.routes.remove(evict.id, 'evicted')
      c.background(c.lifecycle.destroy(evict, 'evicted'))
    }
    if (outcome === 'cold') {
      c.d.metrics?.assignments.inc({ template: inst.template, kind: 'cold' })
      c.background(c.lifecycle.provision(inst))
    }
    c.routes.publish(inst)
    if (outcome === 'queued') await c.routes.publishQueue(inst.template)
    return this.#result(inst, outcome)
  }

  #providerUnavailable(t: TemplateConfig): ProviderError {
    const { breaker } = this.c
    const st = breaker.state(t.name)
    return new ProviderError(
      t.provider,
      `template "${t.name}" is unavailable: ${st?.cause ?? 'its provider is failing'}`,
      { code: 'PROVIDER_UNAVAILABLE', kind: st?.kind, retryAfter: breaker.retryAfter(t.name) },
    )
  }

  /**
   * The user's live instance, for the requester that created it (issue 8: the requester is part of a
   * session's identity). Another requester gets 409, never a link into it: the instance row read in the
   * same statement that would have claimed one decides, so the answer is atomic on both stores. Not a
   * second session: one live instance per user and template is the store's invariant, and a user's
   * data (home, volumes) is per user, so two sessions would share it behind two requesters' backs.
   */
  #existing(inst: Instance, input: RequestInput, keyName: string | null): Promise<RequestResult> {
    if (!input.byOwner && inst.keyName !== keyName) {
      this.c.d.metrics?.requests.inc({ template: inst.template, outcome: 'conflict' })
      throw new ConflictError(
        `user "${input.userId}" has a live session of template "${inst.template}" requested by another application; end it there first, or ask that application`,
      )
    }
    return this.#result(inst, 'existing')
  }

  /**
   * Gives the user a free instance of the template that is not ready yet (ready ones went to
   * assignWarm), the most advanced first. Inside the pool lock; the compare-and-set on a free
   * owner keeps a concurrent warm claim from taking the same one.
   */
  async #claimFree(tx: StoreTx, t: TemplateConfig, who: Who, now: number): Promise<Instance | undefined> {
    // With the breaker open a free row still being created is the probe, likely to fail: not for a user.
    const open = this.c.breaker.state(t.name)?.open
    const free = (await tx.listInstances({ template: t.name, assigned: false, states: FREE_STATES, limit: 20 })).filter(
      (f) => !open || f.state !== 'provisioning',
    )
    free.sort(byReadiness)
    for (const f of free) {
      const n = await this.c.apply(f.id, tr.assign(f, who, now), tx)
      if (!n) continue
      await this.#openAssignment(tx, n, who)
      return n
    }
    return undefined
  }

  async #result(inst: Instance, outcome: RequestOutcome): Promise<RequestResult> {
    this.c.d.metrics?.requests.inc({ template: inst.template, outcome })
    const queuePosition = inst.state === 'queued' ? await this.c.d.store.queuePosition(inst.id) : null
    return { instance: inst, outcome, queuePosition }
  }

  async #openAssignment(tx: StoreTx, inst: Instance, who: Who): Promise<void> {
    await tx.openAssignment({
      instanceId: inst.id,
      template: inst.template,
      userId: who.userId,
      keyName: who.keyName,
      startedAt: inst.assignedAt ?? this.c.now(),
    })
  }

  /**
   * Ends the user's assignment and terminates the instance. Idempotent: releasing an ended or unknown
   * instance resolves (the seed's DELETE answers OK twice). `due`, when given, is asked again of the
   * row read inside the stop's own transaction: a stop decided from an older read (the worker's
   * idle cull) does not happen when activity or "keep working" has moved the deadline since.
   */
  async release(
    id: string,
    reason: EndReason,
    actor: string | null = null,
    due?: (fresh: Instance, now: number) => boolean,
  ): Promise<Instance | undefined> {
    const { c } = this
    const now = c.now()
    const result = await c.d.store.transaction(async (tx) => {
      const inst = await tx.getInstance(id)
      if (!inst || !isLive(inst.state)) return { inst, changed: false }
      if (due && !due(inst, now)) return { inst, changed: false }
      const step = inst.state === 'queued' ? tr.endQueued(reason, now) : tr.beginStop(inst, reason, now)
      const next = await c.apply(id, step, tx)
      if (!next) return { inst, changed: false }
      if (inst.ownerId) await tx.closeAssignment(id, now, reason, c.cost(inst, now))
      return { inst: next, changed: true }
    })
    if (!result.changed || !result.inst) return result.inst
    const inst = result.inst
    c.d.metrics?.releases.inc({ template: inst.template, reason })
    await c.audit(id, 'released', actor, { reason, userId: inst.ownerId })
    c.routes.remove(id, reason)
    if (inst.state === 'stopping') c.background(c.lifecycle.destroy(inst, reason))
    else c.background(c.capacity.afterCapacityFreed())
    return inst
  }
}
