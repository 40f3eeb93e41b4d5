import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { deriveAppToken } from '../domain/app-token.js'
import type { Config, TemplateConfig } from '../config/types.js'
import {
  AppError,
  ConflictError,
  NotFoundError,
  PoolFullError,
  ProviderError,
  ValidationError,
} from '../domain/errors.js'
import { newInstanceId } from '../domain/ids.js'
import { type EndReason, type Instance, isLive, LIVE_STATES } from '../domain/instance.js'
import type { RouteEntry } from '../domain/routes.js'
import type { Metrics } from '../metrics.js'
import {
  LABEL_ASSIGNED_AT,
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_POOL,
  LABEL_REQUESTER,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type IsolationReport,
  type Provider,
} from '../providers/provider.js'
import { CreateBreaker, type BackoffOptions, type BreakerState } from './create-breaker.js'
import {
  LiveInstanceExistsError,
  type Store,
  type StoreTx,
  type WarmClaimInput,
  type WarmClaimResult,
} from '../store/store.js'

/** Where the pool publishes route changes (the gateway's RouteHub in-process). */
export interface RoutePublisher {
  upsert(route: RouteEntry): void
  remove(instanceId: string, reason: string): void
  reset(routes: readonly RouteEntry[]): void
}

/** Fault-injection points for recovery tests (kill the server between two steps). Never set in production. */
export interface FaultHooks {
  afterProviderCreate?(instanceId: string): void | Promise<void>
  beforeProviderCreate?(instanceId: string): void | Promise<void>
}

export interface PoolDeps {
  readonly config: Config
  readonly store: Store
  /** Providers by name; every template's provider must be present. */
  readonly providers: ReadonlyMap<string, Provider>
  readonly routes: RoutePublisher
  readonly log: Logger
  readonly metrics?: Metrics
  readonly now?: () => number
  readonly faults?: FaultHooks
  /** Problems found per template at start (missing program…): such templates refuse requests. */
  readonly unavailable?: ReadonlyMap<string, string>
  /** URL the instance posts progress to; `{id}` is replaced. */
  readonly progressUrl?: (instanceId: string) => string
  /** The per-instance app token (domain/app-token.ts with the gateway secret); tests may leave it out. */
  readonly appToken?: (instanceId: string, generation: number) => string
  /** Backoff and breaker for failed creates (create-breaker.ts DEFAULT_BACKOFF); tests shorten it. */
  readonly backoff?: Partial<BackoffOptions>
}

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

const MAX_START_ATTEMPTS = 3
/** Free instances a queued request or a new one may be given, most advanced first. */
const FREE_LIVE = ['ready', 'starting', 'provisioning'] as const
const READINESS: Record<string, number> = { ready: 0, starting: 1, provisioning: 2 }
/**
 * Resolves on the next turn of the event loop. The fail → free capacity → top-up → create path runs
 * through it, so that a provider that fails at once (and a store whose driver resolves synchronously,
 * better-sqlite3) can never keep the loop in the microtask queue and starve I/O (issue 9).
 */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

/**
 * The one place that decides (STYLE.md `pool/`): assignment, release, warm-pool top-up, the queue,
 * provisioning and replacement. The worker (worker.ts) calls into it on a timer; the API on requests.
 *
 * Atomicity: every check-a-cap-then-insert runs inside `store.withPoolLock`; warm hits use
 * `store.assignWarm` (row locks with SKIP LOCKED); the partial unique index on (owner, template) is the
 * last line of defence against a user holding two live instances.
 */
export class PoolService {
  readonly #d: PoolDeps
  readonly #templates: Map<string, TemplateConfig>
  readonly #now: () => number
  /** Instances with a create or destroy running in this process, so the worker does not start a second. */
  readonly #busy = new Set<string>()
  /** Pending background work, awaited by drain() (tests, shutdown). */
  readonly #pending = new Set<Promise<unknown>>()
  #closed = false
  #version = 0
  /** Without a configured app-token function (tests), tokens from a per-process random secret. */
  readonly #fallbackAppToken = (
    (secret: string) => (id: string, gen: number) =>
      deriveAppToken(secret, id, gen)
  )(randomBytes(32).toString('base64url'))
  #topUp: Promise<void> | undefined
  #topUpAgain = false
  /** Backoff and circuit breaker for creates, per template. */
  readonly #breaker: CreateBreaker
  readonly #backoffTimers = new Map<string, NodeJS.Timeout>()

  constructor(deps: PoolDeps) {
    this.#d = deps
    this.#templates = new Map(deps.config.templates.map((t) => [t.name, t]))
    this.#now = deps.now ?? Date.now
    this.#breaker = new CreateBreaker(deps.backoff ?? {}, this.#now, (template, st) => {
      deps.metrics?.templateUnavailable.set({ template }, st?.open ? 1 : 0)
      if (!st) deps.log.info({ template }, 'provider create succeeded; the template is available again')
      else if (st.open)
        deps.log.error(
          { template, kind: st.kind, failures: st.failures, retryInMs: st.nextAttemptAt - this.#now() },
          `template "${template}" is unavailable: ${st.cause}`,
        )
      else
        deps.log.warn(
          { template, kind: st.kind, failures: st.failures, retryInMs: st.nextAttemptAt - this.#now() },
          'provider create failed; backing off',
        )
    })
  }

  template(name: string): TemplateConfig {
    const t = this.#templates.get(name)
    if (!t)
      throw new ValidationError(`unknown template "${name}"`, [
        { path: '/payload/template', message: `known templates: ${[...this.#templates.keys()].join(', ')}` },
      ])
    return t
  }

  /** Why the template cannot serve now: a problem found at start, or its open breaker (with the cause). */
  unavailableReason(template: string): string | undefined {
    return this.#d.unavailable?.get(template) ?? this.#breaker.openReason(template)
  }

  /** Templates whose creates are failing (backoff or open breaker), for /readyz, the dashboard, metrics. */
  breakers(): BreakerState[] {
    return this.#breaker.all()
  }

  #providerUnavailable(t: TemplateConfig): ProviderError {
    const st = this.#breaker.state(t.name)
    return new ProviderError(
      t.provider,
      `template "${t.name}" is unavailable: ${st?.cause ?? 'its provider is failing'}`,
      {
        code: 'PROVIDER_UNAVAILABLE',
        kind: st?.kind,
        retryAfter: this.#breaker.retryAfter(t.name),
      },
    )
  }

  /** What each provider in use isolates (DESIGN.md contract 5), for /readyz, the admin view and the login rules. */
  isolation(): (IsolationReport & { readonly provider: string })[] {
    const out: (IsolationReport & { readonly provider: string })[] = []
    for (const [name, p] of this.#d.providers) {
      const r = p.isolation?.()
      if (r) out.push({ provider: name, ...r })
    }
    return out
  }

  /** Seed REQUEST_RSTUDIO: the user's live instance, a warm one, a new one within caps, or the queue. */
  async request(input: RequestInput): Promise<RequestResult> {
    const t = this.template(input.template ?? this.#d.config.pool.defaultTemplate)
    const why = this.#d.unavailable?.get(t.name)
    if (why) throw new AppError('TEMPLATE_UNAVAILABLE', `template "${t.name}" is not available: ${why}`)
    const keyName = input.keyName ?? null
    const { store } = this.#d

    try {
      // The user's live instance, else a warm one: one store call either way (assignWarm checks first).
      const claim = await this.#claimWarm({ template: t.name, userId: input.userId, keyName })
      if (claim.existing) return this.#existing(claim.existing, input, keyName)
      const claimed = claim.assigned
      if (claimed) {
        this.#d.metrics?.assignments.inc({ template: t.name, kind: 'warm' })
        this.#publish(claimed)
        this.#relabelSoon(claimed)
        this.#background(this.topUp())
        return this.#result(claimed, 'warm')
      }
    } catch (err) {
      if (!(err instanceof LiveInstanceExistsError)) throw err
      const again = await store.findLive(input.userId, t.name)
      if (again) return this.#existing(again, input, keyName)
      throw err
    }

    let evict: Instance | undefined
    let outcome: RequestOutcome | 'claimed'
    let inst: Instance
    let probe: string | undefined
    try {
      ;({ inst, outcome, evict } = await store.withPoolLock(async (tx) => {
        const live = await tx.findLive(input.userId, t.name)
        if (live) return { inst: live, outcome: 'existing' as const, evict: undefined }
        const now = this.#now()
        // A free instance that is still starting beats a cold start (issue 9): it is closer to ready.
        const claimed = await this.#claimFree(tx, t, input.userId, keyName, now)
        if (claimed) return { inst: claimed, outcome: 'claimed' as const, evict: undefined }
        // An open breaker: nothing is created or queued until a probe succeeds.
        if (this.#breaker.state(t.name)?.open && !this.#breaker.wouldPermit(t.name)) throw this.#providerUnavailable(t)
        const counts = await tx.countActive()
        const templateCount = counts.byTemplate[t.name] ?? 0
        const underTemplate = templateCount < t.maxInstances
        const underPool = counts.total < this.#d.config.pool.maxInstances
        const base = {
          template: t.name,
          ownerId: input.userId,
          keyName,
          createdAt: now,
          updatedAt: now,
          assignedAt: now,
          lastActivityAt: now,
        }
        if (underTemplate && underPool) {
          const id = newInstanceId()
          if (this.#breaker.permit(t.name, id)) probe = id
          const row = await tx.insertInstance({
            ...base,
            id,
            state: 'provisioning',
            startedAt: now,
            progress: 0,
            progressMessage: 'asking the provider for an instance',
          })
          await this.#openAssignment(tx, row, input.userId, keyName)
          return { inst: row, outcome: 'cold' as const, evict: undefined }
        }
        if (t.whenFull === 'reject') {
          throw new PoolFullError(
            underTemplate
              ? 'the pool is at its maxInstances'
              : `template "${t.name}" is at its maxInstances (${t.maxInstances})`,
          )
        }
        // The pool-wide cap is reached but this template has room: a free warm instance of another
        // template makes way, so warm pools can never starve a template forever.
        let victim: Instance | undefined
        if (underTemplate && !underPool) {
          const free = await tx.listInstances({
            assigned: false,
            states: ['ready', 'starting', 'provisioning'],
            limit: 50,
          })
          const candidate = free.find((f) => f.template !== t.name)
          if (candidate)
            victim = await tx.updateInstance(
              candidate.id,
              { state: 'stopping', updatedAt: now, progressMessage: 'making room for a queued request' },
              { states: [candidate.state], ownerId: null },
            )
        }
        const row = await tx.insertInstance({
          ...base,
          id: newInstanceId(),
          state: 'queued',
          progress: 0,
          progressMessage: 'waiting for a free place in the pool',
        })
        await this.#openAssignment(tx, row, input.userId, keyName)
        return { inst: row, outcome: 'queued' as const, evict: victim }
      }))
    } catch (err) {
      if (probe) this.#breaker.release(t.name, probe)
      if (err instanceof PoolFullError) this.#d.metrics?.requests.inc({ template: t.name, outcome: 'rejected' })
      if (!(err instanceof LiveInstanceExistsError)) throw err
      const again = await store.findLive(input.userId, t.name)
      if (!again) throw err
      return this.#existing(again, input, keyName)
    }
    if (outcome === 'existing') return this.#existing(inst, input, keyName)
    if (outcome === 'claimed') {
      await this.#audit(inst.id, 'assigned', keyName, { userId: input.userId, state: inst.state })
      this.#d.metrics?.assignments.inc({ template: t.name, kind: 'warm' })
      this.#publish(inst)
      this.#relabelSoon(inst)
      this.#background(this.topUp())
      return this.#result(inst, 'warm')
    }
    await this.#audit(inst.id, outcome === 'cold' ? 'assigned' : 'queued', keyName, { userId: input.userId })
    if (evict) {
      this.#version++
      this.#d.routes.remove(evict.id, 'evicted')
      this.#background(this.#destroy(evict, 'evicted'))
    }
    if (outcome === 'cold') {
      this.#d.metrics?.assignments.inc({ template: t.name, kind: 'cold' })
      this.#background(this.provision(inst))
    }
    this.#publish(inst)
    if (outcome === 'queued') await this.#publishQueue(t.name)
    return this.#result(inst, outcome)
  }

  /** The warm claim: the store decides how (SQLite commits the claims of one event-loop turn together). */
  #claimWarm(claim: WarmClaimInput): Promise<WarmClaimResult> {
    return this.#d.store.claimWarm(claim, this.#now())
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
      this.#d.metrics?.requests.inc({ template: inst.template, outcome: 'conflict' })
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
  async #claimFree(
    tx: StoreTx,
    t: TemplateConfig,
    userId: string,
    keyName: string | null,
    now: number,
  ): Promise<Instance | undefined> {
    // With the breaker open a free row still being created is the probe, likely to fail: not for a user.
    const open = this.#breaker.state(t.name)?.open
    const free = (await tx.listInstances({ template: t.name, assigned: false, states: FREE_LIVE, limit: 20 })).filter(
      (f) => !open || f.state !== 'provisioning',
    )
    free.sort((a, b) => READINESS[a.state]! - READINESS[b.state]! || a.createdAt - b.createdAt)
    for (const f of free) {
      const n = await tx.updateInstance(
        f.id,
        { ownerId: userId, keyName, assignedAt: now, lastActivityAt: now, updatedAt: now },
        { states: [f.state], ownerId: null, generation: f.generation },
      )
      if (!n) continue
      await this.#openAssignment(tx, n, userId, keyName)
      return n
    }
    return undefined
  }

  async #result(inst: Instance, outcome: RequestOutcome): Promise<RequestResult> {
    this.#d.metrics?.requests.inc({ template: inst.template, outcome })
    const queuePosition = inst.state === 'queued' ? await this.#d.store.queuePosition(inst.id) : null
    return { instance: inst, outcome, queuePosition }
  }

  async #openAssignment(tx: StoreTx, inst: Instance, userId: string, keyName: string | null): Promise<void> {
    await tx.openAssignment({
      instanceId: inst.id,
      template: inst.template,
      userId,
      keyName,
      startedAt: inst.assignedAt ?? this.#now(),
    })
  }

  /**
   * Ends the user's assignment and terminates the instance. Idempotent: releasing an ended or unknown
   * instance resolves (the seed's DELETE answers OK twice).
   */
  async release(id: string, reason: EndReason, actor: string | null = null): Promise<Instance | undefined> {
    const now = this.#now()
    const result = await this.#d.store.transaction(async (tx) => {
      const inst = await tx.getInstance(id)
      if (!inst || !isLive(inst.state)) return { inst, changed: false }
      const next: Instance | undefined =
        inst.state === 'queued'
          ? await tx.updateInstance(
              id,
              { state: 'terminated', endedAt: now, endReason: reason, updatedAt: now, progressMessage: 'ended' },
              { states: ['queued'] },
            )
          : await tx.updateInstance(
              id,
              { state: 'stopping', endReason: reason, updatedAt: now, progressMessage: 'stopping' },
              { states: [inst.state] },
            )
      if (!next) return { inst, changed: false }
      if (inst.ownerId) await tx.closeAssignment(id, now, reason, this.#cost(inst, now))
      return { inst: next, changed: true }
    })
    if (!result.changed || !result.inst) return result.inst
    const inst = result.inst
    this.#d.metrics?.releases.inc({ template: inst.template, reason })
    await this.#audit(id, 'released', actor, { reason, userId: inst.ownerId })
    this.#version++
    this.#d.routes.remove(id, reason)
    if (inst.state === 'stopping') this.#background(this.#destroy(inst, reason))
    else this.#background(this.#afterCapacityFreed())
    return inst
  }

  #cost(inst: Instance, now: number): number | null {
    const t = this.#templates.get(inst.template)
    if (!t || !t.pricePerHour) return null
    const from = inst.assignedAt ?? inst.createdAt
    return Math.round(((now - from) / 3_600_000) * t.pricePerHour * 10_000) / 10_000
  }

  /** Destroys the resource (idempotent), marks the row terminated, then serves the queue and tops up. */
  /**
   * Finishes a `stopping` instance the last attempt left behind (the worker's retry). `ref` is what
   * the provider lists for it now, which may differ from the row's (a create that ended after the release).
   */
  finishStop(inst: Instance, ref: string | null): Promise<void> {
    return this.#destroy(inst, 'retry', ref)
  }

  async #destroy(inst: Instance, why: string, ref: string | null = inst.providerRef): Promise<void> {
    if (this.#busy.has(inst.id)) return
    this.#busy.add(inst.id)
    try {
      if (ref) {
        const provider = this.#provider(inst.template)
        await provider.destroy(ref, { log: this.#d.log })
      }
      const now = this.#now()
      await this.#d.store.updateInstance(
        inst.id,
        { state: 'terminated', endedAt: now, updatedAt: now, progressMessage: 'ended' },
        { states: ['stopping'] },
      )
      await this.#audit(inst.id, 'terminated', null, { why })
    } catch (err) {
      this.#d.metrics?.providerErrors.inc({
        provider: this.#templates.get(inst.template)?.provider ?? '?',
        op: 'destroy',
      })
      this.#d.log.warn({ instanceId: inst.id, err: errText(err) }, 'destroy failed; the worker will retry')
      return
    } finally {
      this.#busy.delete(inst.id)
    }
    await this.#afterCapacityFreed()
  }

  async #afterCapacityFreed(): Promise<void> {
    await this.serveQueue()
    await this.topUp()
  }

  /**
   * Creates the provider resource for a `provisioning` row and records it. Idempotent on the
   * instance id (the provider's create is), so a retry after a crash adopts what was made.
   */
  async provision(inst: Instance): Promise<void> {
    if (this.#closed || this.#busy.has(inst.id)) return
    const t = this.#templates.get(inst.template)
    if (!t) return
    // Backing off after failed creates (or an open breaker whose probe is another instance): the
    // row stays `provisioning` and the worker's first cycle after the delay creates it.
    if (!this.#breaker.permit(t.name, inst.id)) return this.#afterBackoff(t.name)
    this.#busy.add(inst.id)
    let failure: string | undefined
    let created = false
    try {
      const token = randomBytes(24).toString('base64url')
      const now = this.#now()
      const ready = await this.#d.store.updateInstance(
        inst.id,
        {
          progressTokenHash: sha256(token),
          updatedAt: now,
          progress: Math.max(inst.progress, 5),
          progressMessage:
            inst.generation > 0 ? 'your session is being restored' : 'asking the provider for an instance',
        },
        { states: ['provisioning'], generation: inst.generation },
      )
      if (!ready) {
        this.#breaker.release(t.name, inst.id)
        return
      }
      this.#publish(ready)
      const provider = this.#provider(t.name)
      const spec = this.#spec(ready, t, token)
      await this.#d.faults?.beforeProviderCreate?.(inst.id)
      const res = await provider.create(spec, { log: this.#d.log })
      created = true
      this.#breaker.succeeded(t.name)
      await this.#d.faults?.afterProviderCreate?.(inst.id)
      const at = this.#now()
      const next = await this.#d.store.updateInstance(
        inst.id,
        {
          state: 'starting',
          providerRef: res.ref,
          address: res.address,
          updatedAt: at,
          progress: Math.max(ready.progress, res.progress ?? 20),
          progressMessage: res.message ?? 'starting the app',
        },
        { states: ['provisioning'], generation: inst.generation },
      )
      if (!next) {
        // Released (or replaced) while we were creating: do not leak what we made.
        const cur = await this.#d.store.getInstance(inst.id)
        if (!cur || cur.providerRef !== res.ref) await provider.destroy(res.ref, { log: this.#d.log }).catch(() => {})
        return
      }
      await this.#audit(inst.id, 'provisioned', null, { ref: res.ref, generation: inst.generation })
      this.#publish(next)
      this.#busy.delete(inst.id)
      // Claimed by a user while it was being created: its tags get the owner now.
      if (next.ownerId && !spec.labels[LABEL_OWNER]) this.#relabelSoon(next)
      // A free instance that can now be handed to a queued request (serveQueue hands over starting ones).
      else if (!next.ownerId) this.#background(this.serveQueue())
      this.#background(this.watchStart(next.id))
    } catch (err) {
      this.#d.metrics?.providerErrors.inc({ provider: t.provider, op: 'create' })
      const retryable = err instanceof ProviderError && err.retryable
      // After the create succeeded the failure is the store's, not the provider's: no backoff for it.
      const st = created ? undefined : this.#breaker.failed(t.name, err, errText(err))
      if (st) this.#afterBackoff(t.name)
      this.#d.log.warn(
        { instanceId: inst.id, err: errText(err), retryable, kind: st?.kind, breakerOpen: st?.open },
        'provider create failed',
      )
      // A retryable error (throttling) is left in `provisioning`: the worker's next cycle tries again.
      if (!retryable) failure = errText(err)
    } finally {
      this.#busy.delete(inst.id)
    }
    if (failure !== undefined) await this.fail(inst.id, failure)
  }

  /**
   * Once the template's backoff has passed, creates what waited for it (rows left `provisioning`,
   * the queue, the warm pool) without waiting for the worker's next cycle. One timer per template,
   * unref'd, and not tracked by drain(): a five-minute backoff must not hold up a shutdown.
   */
  #afterBackoff(template: string): void {
    if (this.#closed || this.#backoffTimers.has(template)) return
    const at = this.#breaker.state(template)?.nextAttemptAt ?? this.#now()
    const timer = setTimeout(
      () => {
        this.#backoffTimers.delete(template)
        if (this.#closed) return
        this.#background(
          (async () => {
            const rows = await this.#d.store.listInstances({ template, states: ['provisioning'], limit: 100 })
            for (const r of rows) if (!r.providerRef && !this.#busy.has(r.id)) this.#background(this.provision(r))
            await this.serveQueue()
            await this.topUp()
          })(),
        )
      },
      Math.max(0, at - this.#now()) + 1,
    )
    timer.unref()
    this.#backoffTimers.set(template, timer)
  }

  #spec(inst: Instance, t: TemplateConfig, token: string): InstanceSpec {
    const labels: Record<string, string> = {
      [LABEL_POOL]: this.#d.config.pool.id,
      [LABEL_INSTANCE]: inst.id,
      [LABEL_TEMPLATE]: t.name,
      'studiopool:generation': String(inst.generation),
    }
    Object.assign(labels, ownerLabels(inst))
    const progressUrl =
      this.#d.progressUrl?.(inst.id) ?? `${this.#d.config.server.publicUrl}/api/v1/instances/${inst.id}/progress`
    const basePath = `/s/${inst.id}/`
    return {
      id: inst.id,
      poolId: this.#d.config.pool.id,
      template: t,
      basePath,
      labels,
      progressUrl,
      progressToken: token,
      appToken: (this.#d.appToken ?? this.#fallbackAppToken)(inst.id, inst.generation),
      ownerId: inst.ownerId,
      sessionUrl: this.#d.config.server.publicUrl.replace(/\/+$/, '') + basePath,
    }
  }

  /** Probes a `starting` instance until its app answers, or its start timeout passes. */
  async watchStart(id: string): Promise<void> {
    if (this.#busy.has(id)) return
    this.#busy.add(id)
    try {
      const { probeHttp } = await import('../providers/http-probe.js')
      let delay = 100
      for (;;) {
        if (this.#closed) return
        const inst = await this.#d.store.getInstance(id)
        if (!inst || inst.state !== 'starting' || !inst.address) return
        const t = this.#templates.get(inst.template)
        if (!t) return
        // `{{basePath}}`: apps that keep the prefix (Jupyter's base_url) answer only under it.
        const r = await probeHttp(inst.address, t.healthPath.replaceAll('{{basePath}}', `/s/${inst.id}/`), {
          timeoutMs: 2000,
        })
        if (r.ok) {
          const now = this.#now()
          const next = await this.#d.store.updateInstance(
            id,
            { state: 'ready', readyAt: now, updatedAt: now, progress: 100, progressMessage: 'ready' },
            { states: ['starting'], generation: inst.generation },
          )
          if (next) {
            await this.#audit(id, 'ready', null, { generation: inst.generation })
            this.#publish(next)
            // A free instance just became ready: queued requests take it now, not a worker cycle later.
            if (!next.ownerId) this.#background(this.serveQueue())
          }
          return
        }
        if (this.#now() - (inst.startedAt ?? inst.createdAt) > t.startTimeoutMs) return // past its start timeout: the worker fails it
        await new Promise((r) => setTimeout(r, delay).unref())
        delay = Math.min(delay * 1.5, 1000)
      }
    } finally {
      this.#busy.delete(id)
    }
  }

  isBusy(id: string): boolean {
    return this.#busy.has(id)
  }

  /**
   * An instance could not start. Assigned ones are retried under the same id (a new generation) up to
   * MAX_START_ATTEMPTS, then end with reason `failed`; free ones fail and the warm pool refills.
   */
  async fail(id: string, reason: string): Promise<void> {
    const inst = await this.#d.store.getInstance(id)
    if (!inst || !isLive(inst.state)) return
    const now = this.#now()
    if (inst.providerRef) {
      await this.#provider(inst.template)
        .destroy(inst.providerRef, { log: this.#d.log })
        .catch((err) => this.#d.log.warn({ instanceId: id, err: errText(err) }, 'destroy after failure failed'))
    }
    // With the template's breaker open a retry would fail the same way: the session ends with the cause.
    if (inst.ownerId && inst.generation + 1 < MAX_START_ATTEMPTS && !this.#breaker.state(inst.template)?.open) {
      const next = await this.#d.store.updateInstance(
        id,
        {
          state: 'provisioning',
          startedAt: now,
          generation: inst.generation + 1,
          providerRef: null,
          address: null,
          progress: 0,
          progressMessage: `retrying: ${reason}`.slice(0, 500),
          failureReason: reason.slice(0, 1000),
          updatedAt: now,
        },
        { generation: inst.generation },
      )
      await this.#audit(id, 'retry', null, { reason })
      if (next) {
        this.#publish(next)
        this.#background(this.provision(next))
      }
      return
    }
    // Only if nobody claimed it meanwhile (a request may take a free instance that is still being
    // created): a claimed one is retried for its user, and its assignment must not stay open.
    const next = await this.#d.store.transaction(async (tx) => {
      const n = await tx.updateInstance(
        id,
        {
          state: 'failed',
          failureReason: reason.slice(0, 1000),
          endedAt: now,
          endReason: 'failed',
          updatedAt: now,
          progressMessage: 'failed',
        },
        { generation: inst.generation, ownerId: inst.ownerId },
      )
      if (n?.ownerId) await tx.closeAssignment(id, now, 'failed', this.#cost(inst, now))
      return n
    })
    if (!next) {
      const cur = await this.#d.store.getInstance(id)
      if (cur && isLive(cur.state) && cur.generation === inst.generation && cur.ownerId !== inst.ownerId)
        return this.fail(id, reason)
      return
    }
    await this.#audit(id, 'failed', null, { reason })
    this.#publish(next)
    this.#background(nextTurn().then(() => this.#afterCapacityFreed()))
  }

  /**
   * Replaces an assigned instance whose resource vanished (spot reclaim, crash): same instanceId and
   * URL, owner kept, a new generation, progress says the session is being restored.
   */
  async replace(inst: Instance, why: string): Promise<void> {
    const now = this.#now()
    const next = await this.#d.store.updateInstance(
      inst.id,
      {
        state: 'provisioning',
        startedAt: now,
        generation: inst.generation + 1,
        providerRef: null,
        address: null,
        readyAt: null,
        progress: 0,
        progressMessage: 'your session is being restored',
        updatedAt: now,
      },
      { generation: inst.generation, states: [inst.state] },
    )
    if (!next) return
    await this.#audit(inst.id, 'replaced', null, { why, generation: next.generation })
    this.#publish(next)
    await this.provision(next)
  }

  /** Admin restart: a fresh resource under the same id and URL, owner kept. */
  async restart(id: string, actor: string | null): Promise<Instance | undefined> {
    const inst = await this.#d.store.getInstance(id)
    if (!inst || !['starting', 'ready', 'suspended'].includes(inst.state))
      throw new ConflictError(`cannot restart an instance that is ${inst?.state ?? 'absent'}`)
    if (inst.providerRef) await this.#provider(inst.template).destroy(inst.providerRef, { log: this.#d.log })
    await this.#audit(id, 'restart', actor, {})
    await this.replace(inst, 'restart')
    return this.#d.store.getInstance(id)
  }

  /** Stops the resource but keeps its disk (providers that support it, e.g. EC2 stop). */
  async suspend(id: string, actor: string | null): Promise<Instance | undefined> {
    const inst = await this.#d.store.getInstance(id)
    if (!inst || inst.state !== 'ready' || !inst.providerRef)
      throw new ConflictError(`only a ready instance can be suspended (it is ${inst?.state ?? 'absent'})`)
    const provider = this.#provider(inst.template)
    if (!provider.capabilities.supportsSuspend || !provider.stop)
      throw new ConflictError(`provider ${provider.name} cannot suspend instances`)
    await provider.stop(inst.providerRef, { log: this.#d.log })
    const next = await this.#d.store.updateInstance(
      id,
      { state: 'suspended', updatedAt: this.#now(), progressMessage: 'suspended' },
      { states: ['ready'] },
    )
    await this.#audit(id, 'suspended', actor, {})
    if (next) this.#publish(next)
    return next
  }

  async resume(id: string, actor: string | null): Promise<Instance | undefined> {
    const inst = await this.#d.store.getInstance(id)
    if (!inst || inst.state !== 'suspended' || !inst.providerRef)
      throw new ConflictError(`only a suspended instance can be resumed (it is ${inst?.state ?? 'absent'})`)
    const provider = this.#provider(inst.template)
    if (!provider.start) throw new ConflictError(`provider ${provider.name} cannot resume instances`)
    await provider.start(inst.providerRef, { log: this.#d.log })
    const now = this.#now()
    const next = await this.#d.store.updateInstance(
      id,
      {
        state: 'starting',
        startedAt: now,
        updatedAt: now,
        lastActivityAt: now,
        progress: 50,
        progressMessage: 'resuming',
      },
      { states: ['suspended'] },
    )
    await this.#audit(id, 'resumed', actor, {})
    if (next) {
      this.#publish(next)
      this.#background(this.watchStart(id))
    }
    return next
  }

  /**
   * Serves queued requests, oldest first (issue 9): each takes a free instance of its template
   * when there is one (ready or starting: it is handed over, see below), else a new one while the
   * caps allow and the template's breaker permits a create. New instances are made for the queue
   * only when no free one exists: a free one still being created is waited for (it is handed over
   * as soon as it runs).
   *
   * Handing over: the queued row keeps its instanceId and URL (the user already has them) and takes
   * the free instance's resource, state, address and progress; the free row ends as terminated
   * without touching the resource, and the resource's labels are rewritten (relabel) to name the
   * queued row and its owner. Templates that keep the path prefix (`pathMode: keep`) built their app
   * for the free instance's own base path, and templates with `upstreamHeaders` check an app token
   * derived from the free instance's id, so there the free one is recycled instead (stopped to make
   * room, then the queued request gets a new one).
   */
  async serveQueue(): Promise<void> {
    if (this.#closed) return
    // Cheap check without the lock: a free instance becoming ready calls this every time.
    if (!(await this.#d.store.listQueued(undefined, 1)).length) return
    const handed: { q: Instance; from: Instance }[] = []
    const evicted: Instance[] = []
    const promoted = await this.#d.store.withPoolLock(async (tx) => {
      const queued = await tx.listQueued(undefined, 500)
      if (!queued.length) return []
      const counts = await tx.countActive()
      const freeRows = await tx.listInstances({ assigned: false, states: FREE_LIVE, limit: 1000 })
      freeRows.sort((a, b) => READINESS[a.state]! - READINESS[b.state]! || a.createdAt - b.createdAt)
      const free = new Map<string, Instance[]>()
      for (const f of freeRows) {
        if (!free.has(f.template)) free.set(f.template, [])
        free.get(f.template)!.push(f)
      }
      const out: Instance[] = []
      let total = counts.total
      for (const q of queued) {
        const t = this.#templates.get(q.template)
        if (!t) continue
        const now = this.#now()
        const mine = free.get(q.template) ?? []
        // 1. A free instance that runs (ready or starting).
        const i = mine.findIndex((f) => f.state !== 'provisioning' && f.providerRef)
        if (i >= 0) {
          const f = mine.splice(i, 1)[0]!
          // Also recycled: an app that checks the gateway's app token, which is per instance id.
          if (t.pathMode === 'keep' || Object.keys(t.upstreamHeaders ?? {}).length > 0) {
            const v = await tx.updateInstance(
              f.id,
              { state: 'stopping', updatedAt: now, progressMessage: 'making room for a queued request' },
              { states: [f.state], ownerId: null },
            )
            if (v) evicted.push(v)
            continue
          }
          const moved = await this.#handOver(tx, f, q, now)
          if (moved) handed.push({ q: moved, from: f })
          continue
        }
        // 2. One still being created: wait for it rather than create another.
        if (mine.some((f) => f.state === 'provisioning')) {
          mine.splice(
            mine.findIndex((f) => f.state === 'provisioning'),
            1,
          )
          continue
        }
        // 3. A new instance, within the caps and the breaker.
        if (total >= this.#d.config.pool.maxInstances) continue
        if ((counts.byTemplate[q.template] ?? 0) >= t.maxInstances) continue
        if (!this.#breaker.permit(q.template, q.id)) continue
        const n = await tx.updateInstance(
          q.id,
          {
            state: 'provisioning',
            startedAt: now,
            updatedAt: now,
            progress: 0,
            progressMessage: 'asking the provider for an instance',
          },
          { states: ['queued'] },
        )
        if (!n) {
          this.#breaker.release(q.template, q.id)
          continue
        }
        counts.byTemplate[q.template] = (counts.byTemplate[q.template] ?? 0) + 1
        total++
        out.push(n)
      }
      return out
    })
    for (const { q, from } of handed) {
      this.#d.metrics?.assignments.inc({ template: q.template, kind: 'queued' })
      await this.#audit(q.id, 'handed-over', null, { from: from.id, state: q.state })
      await this.#audit(from.id, 'handed-over', null, { to: q.id })
      this.#version++
      this.#d.routes.remove(from.id, 'handed over')
      this.#publish(q)
      this.#relabelSoon(q)
      if (q.state === 'starting') this.#background(this.watchStart(q.id))
    }
    for (const v of evicted) {
      this.#version++
      this.#d.routes.remove(v.id, 'evicted')
      this.#background(this.#destroy(v, 'evicted'))
    }
    for (const inst of promoted) {
      this.#d.metrics?.assignments.inc({ template: inst.template, kind: 'queued' })
      await this.#audit(inst.id, 'dequeued', null, {})
      this.#publish(inst)
      this.#background(this.provision(inst))
    }
    const changed = new Set([...promoted, ...handed.map((h) => h.q)].map((p) => p.template))
    for (const t of changed) await this.#publishQueue(t)
  }

  /** The queued row `q` takes the free instance `f`'s resource (see serveQueue). Undefined when either changed meanwhile. */
  async #handOver(tx: StoreTx, f: Instance, q: Instance, now: number): Promise<Instance | undefined> {
    const gone = await tx.updateInstance(
      f.id,
      {
        state: 'terminated',
        endedAt: now,
        updatedAt: now,
        providerRef: null,
        address: null,
        progressMessage: `handed over to queued request ${q.id}`,
      },
      { states: [f.state], ownerId: null, generation: f.generation },
    )
    if (!gone) return undefined
    const moved = await tx.updateInstance(
      q.id,
      {
        state: f.state,
        providerRef: f.providerRef,
        address: f.address,
        progress: f.progress,
        progressMessage: f.progressMessage,
        progressTokenHash: f.progressTokenHash,
        startedAt: f.startedAt ?? now,
        readyAt: f.readyAt,
        // Idle time counts from now: the user may have waited in the queue longer than the idle timeout.
        lastActivityAt: now,
        updatedAt: now,
      },
      { states: ['queued'] },
    )
    if (!moved) {
      // Released meanwhile: the free instance stays free.
      await tx.updateInstance(
        f.id,
        {
          state: f.state,
          endedAt: null,
          providerRef: f.providerRef,
          address: f.address,
          progressMessage: f.progressMessage,
          updatedAt: now,
        },
        { states: ['terminated'] },
      )
      return undefined
    }
    return moved
  }

  /**
   * Tops each template's free instances up to minFree, within the template's and the pool's caps;
   * queued requests come first. Called after every assignment and release, so calls coalesce: at
   * most one runs, and at most one more follows it (a warm hit never waits on the pool lock for it).
   */
  topUp(): Promise<void> {
    if (this.#topUp) {
      this.#topUpAgain = true
      return this.#topUp
    }
    this.#topUp = (async () => {
      try {
        do {
          this.#topUpAgain = false
          await this.#topUpOnce()
          if (this.#topUpAgain) await nextTurn()
        } while (this.#topUpAgain && !this.#closed)
      } finally {
        this.#topUp = undefined
      }
    })()
    return this.#topUp
  }

  async #topUpOnce(): Promise<void> {
    if (this.#closed) return
    // Templates backing off after failed creates are skipped: the worker's first cycle after the delay tops them up.
    const wanting = this.#d.config.templates.filter(
      (t) => t.minFree > 0 && !this.#d.unavailable?.has(t.name) && this.#breaker.wouldPermit(t.name),
    )
    const FREE_STATES = ['provisioning', 'starting', 'ready'] as const
    // Cheap check without the lock: most calls find every warm pool full.
    const short: TemplateConfig[] = []
    for (const t of wanting) {
      const free = await this.#d.store.countInstances({
        template: t.name,
        assigned: false,
        states: FREE_STATES,
        limit: t.minFree,
      })
      if (free < t.minFree) short.push(t)
    }
    if (!short.length) return
    const made = await this.#d.store.withPoolLock(async (tx) => {
      if ((await tx.listQueued(undefined, 1)).length) return [] // queued requests have the first claim on capacity
      const counts = await tx.countActive()
      let total = counts.total
      const out: Instance[] = []
      for (const t of short) {
        const free = await tx.countInstances({
          template: t.name,
          assigned: false,
          states: FREE_STATES,
          limit: t.minFree,
        })
        let want = t.minFree - free
        // An open breaker lets one create through, the probe; the rest wait for its outcome.
        if (this.#breaker.state(t.name)?.open) want = Math.min(want, 1)
        let count = counts.byTemplate[t.name] ?? 0
        while (want > 0 && count < t.maxInstances && total < this.#d.config.pool.maxInstances) {
          const now = this.#now()
          const id = newInstanceId()
          if (!this.#breaker.permit(t.name, id)) break
          out.push(
            await tx.insertInstance({
              id,
              template: t.name,
              state: 'provisioning',
              ownerId: null,
              keyName: null,
              createdAt: now,
              updatedAt: now,
              startedAt: now,
              progress: 0,
              progressMessage: 'warming up',
            }),
          )
          want--
          count++
          total++
        }
      }
      return out
    })
    for (const inst of made) {
      await this.#audit(inst.id, 'warm', null, {})
      this.#publish(inst)
      this.#background(this.provision(inst))
    }
  }

  /** Progress callback from the instance itself (MLiy's curl progress), with its per-instance token. */
  async reportProgress(id: string, token: string, progress: number, message: string): Promise<Instance> {
    const inst = await this.#d.store.getInstance(id)
    if (!inst || !isLive(inst.state)) throw new NotFoundError('no such live instance')
    if (!inst.progressTokenHash || !safeEqualHex(inst.progressTokenHash, sha256(token)))
      throw new AppError('UNAUTHORIZED', 'invalid progress token')
    if (inst.state === 'ready') return inst // the app answers; progress is 100 already
    const next = await this.#d.store.updateInstance(
      id,
      {
        progress: Math.max(0, Math.min(99, Math.round(progress))),
        progressMessage: message.slice(0, 200),
        updatedAt: this.#now(),
      },
      { generation: inst.generation },
    )
    if (!next) throw new ConflictError('instance changed concurrently')
    this.#publish(next)
    return next
  }

  /**
   * Records the owner and the assignment in the resource's labels (DESIGN.md contract 4), so that
   * `studiopool recover` can rebuild owners from the providers. Best effort and in the background:
   * never on the warm hit's path, a failure is logged and the store stays the truth.
   */
  #relabelSoon(inst: Instance): void {
    const t = this.#templates.get(inst.template)
    const provider = t && this.#d.providers.get(t.provider)
    if (!provider?.relabel || !inst.providerRef) return
    const ref = inst.providerRef
    const labels = { [LABEL_INSTANCE]: inst.id, ...ownerLabels(inst) }
    this.#background(
      nextTurn()
        .then(() => provider.relabel!(ref, labels, { log: this.#d.log }))
        .catch((err) => {
          this.#d.metrics?.providerErrors.inc({ provider: provider.name, op: 'relabel' })
          this.#d.log.warn(
            { instanceId: inst.id, ref, err: errText(err) },
            'relabel failed; the owner is in the store only',
          )
        }),
    )
  }

  /** Publishes every live instance to the route table (start-up, resync). */
  async publishAll(): Promise<void> {
    const live = await this.#d.store.listInstances({ states: LIVE_STATES })
    const positions = queuePositions(live)
    this.#version++
    this.#d.routes.reset(live.map((i) => this.routeEntry(i, positions.get(i.id) ?? null)))
  }

  routeEntry(inst: Instance, queuePosition: number | null): RouteEntry {
    const t = this.#templates.get(inst.template)
    return {
      instanceId: inst.id,
      ownerId: inst.ownerId,
      template: inst.template,
      state: inst.state,
      address: inst.state === 'ready' || inst.state === 'starting' ? inst.address : null,
      pathMode: t?.pathMode ?? 'strip',
      hostHeader: t?.hostHeader ?? 'target',
      progress: inst.progress,
      progressMessage: inst.progressMessage,
      queuePosition,
      generation: inst.generation,
      failureReason: inst.failureReason,
      ...(t?.activityIgnore.length ? { activityIgnore: t.activityIgnore } : {}),
      requester: inst.keyName,
      ...(t?.upstreamHeaders && Object.keys(t.upstreamHeaders).length ? { upstreamHeaders: t.upstreamHeaders } : {}),
    }
  }

  /**
   * Bumped on every change this process publishes (assignments, releases, state changes), so that
   * readers can cache what depends on them (GET_STATUS lists) until the next change.
   */
  get version(): number {
    return this.#version
  }

  #publish(inst: Instance): void {
    this.#version++
    if (isLive(inst.state)) {
      if (inst.state === 'queued') this.#background(this.#publishQueue(inst.template))
      else this.#d.routes.upsert(this.routeEntry(inst, null))
    } else this.#d.routes.remove(inst.id, inst.endReason ?? inst.state)
  }

  async #publishQueue(template: string): Promise<void> {
    const queued = await this.#d.store.listQueued(template, 10_000)
    queued.forEach((q, i) => this.#d.routes.upsert(this.routeEntry(q, i + 1)))
  }

  #provider(template: string): Provider {
    const t = this.#templates.get(template)
    const p = t && this.#d.providers.get(t.provider)
    if (!p)
      throw new ProviderError(t?.provider ?? '?', `no provider for template "${template}"`, {
        code: 'PROVIDER_UNAVAILABLE',
      })
    return p
  }

  async #audit(
    instanceId: string | null,
    event: string,
    actor: string | null,
    detail: Record<string, unknown>,
  ): Promise<void> {
    try {
      await this.#d.store.audit({ at: this.#now(), instanceId, event, actor, detail })
    } catch (err) {
      this.#d.log.warn({ err: errText(err), event }, 'audit write failed')
    }
  }

  audit(
    instanceId: string | null,
    event: string,
    actor: string | null,
    detail: Record<string, unknown>,
  ): Promise<void> {
    return this.#audit(instanceId, event, actor, detail)
  }

  /** Runs work in the background, tracked so that drain() and close() wait for it. */
  spawn(p: Promise<unknown>): void {
    this.#background(p)
  }

  #background(p: Promise<unknown>): void {
    const tracked = p
      .catch((err) => this.#d.log.error({ err: errText(err) }, 'background pool task failed'))
      .finally(() => this.#pending.delete(tracked))
    this.#pending.add(tracked)
  }

  /** No background task runs, no retry is scheduled and no template is within a backoff: what tests wait for before checking the pool's invariants. */
  get quiet(): boolean {
    if (this.#pending.size > 0 || this.#backoffTimers.size > 0) return false
    const now = this.#now()
    for (const name of this.#templates.keys()) if ((this.#breaker.state(name)?.nextAttemptAt ?? 0) > now) return false
    return true
  }

  /** Waits until no background task is left (bounded by rounds, since tasks spawn tasks). */
  async drain(rounds = 50): Promise<void> {
    for (let i = 0; i < rounds && this.#pending.size; i++) await Promise.allSettled([...this.#pending])
  }

  async close(): Promise<void> {
    this.#closed = true
    for (const t of this.#backoffTimers.values()) clearTimeout(t)
    this.#backoffTimers.clear()
    await this.drain(5)
  }
}

/** The owner and assignment labels of an assigned instance (none for a free one). */
export function ownerLabels(inst: Pick<Instance, 'ownerId' | 'keyName' | 'assignedAt'>): Record<string, string> {
  if (!inst.ownerId) return {}
  const out: Record<string, string> = { [LABEL_OWNER]: inst.ownerId }
  if (inst.assignedAt !== null) out[LABEL_ASSIGNED_AT] = String(inst.assignedAt)
  if (inst.keyName) out[LABEL_REQUESTER] = inst.keyName
  return out
}

/** 1-based queue position per queued instance, per template, oldest first (as store.queuePosition). */
export function queuePositions(instances: readonly Instance[]): Map<string, number> {
  const positions = new Map<string, number>()
  const perTemplate = new Map<string, number>()
  for (const q of instances.filter((i) => i.state === 'queued').sort((a, b) => a.createdAt - b.createdAt)) {
    const n = (perTemplate.get(q.template) ?? 0) + 1
    perTemplate.set(q.template, n)
    positions.set(q.id, n)
  }
  return positions
}

function safeEqualHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex')
  const y = Buffer.from(b, 'hex')
  return x.length === y.length && timingSafeEqual(x, y)
}

export function errText(err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}
