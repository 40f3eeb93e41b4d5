import { randomBytes, timingSafeEqual } from 'node:crypto'
import type { TemplateConfig } from '../config/types.js'
import { AppError, ConflictError, NotFoundError, ProviderError, ValidationError } from '../domain/errors.js'
import { type Instance, isLive } from '../domain/instance.js'
import * as tr from '../domain/transitions.js'
import {
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type Provider,
} from '../providers/provider.js'
import { errText, nextTurn, ownerLabels, type PoolCore, sha256 } from './pool-core.js'

const MAX_START_ATTEMPTS = 3

/** Where an instance says its app listens (the progress callback's `address`). */
export interface ReportedAddress {
  readonly host: string
  readonly port: number
}

/**
 * Instance lifecycle: create (provision), readiness (watchStart), failure and retries, replacement,
 * suspend and resume, destroy, and what the worker finds at the providers (adopt, vanished, moved).
 */
export class Lifecycle {
  constructor(private readonly c: PoolCore) {}

  /**
   * Creates the provider resource for a `provisioning` row and records it. Idempotent on the
   * instance id (the provider's create is), so a retry after a crash adopts what was made.
   */
  async provision(inst: Instance): Promise<void> {
    const { c } = this
    if (c.closed || c.busy.has(inst.id)) return
    const t = c.templates.get(inst.template)
    if (!t) return
    // Backing off after failed creates (or an open breaker whose probe is another instance): the
    // row stays `provisioning` and the worker's first cycle after the delay creates it.
    if (!c.breaker.permit(t.name, inst.id)) return c.capacity.afterBackoff(t.name)
    c.busy.add(inst.id)
    let failure: string | undefined
    const step = { created: false }
    try {
      await this.#create(inst, t, step)
    } catch (err) {
      c.d.metrics?.providerErrors.inc({ provider: t.provider, op: 'create' })
      const retryable = err instanceof ProviderError && err.retryable
      // After the create succeeded the failure is the store's, not the provider's: no backoff for it.
      const st = step.created ? undefined : c.breaker.failed(t.name, err, errText(err))
      if (st) c.capacity.afterBackoff(t.name)
      c.d.log.warn(
        { instanceId: inst.id, err: errText(err), retryable, kind: st?.kind, breakerOpen: st?.open },
        'provider create failed',
      )
      // A retryable error (throttling) is left in `provisioning`: the worker's next cycle tries again.
      if (!retryable) failure = errText(err)
    } finally {
      c.busy.delete(inst.id)
    }
    if (failure !== undefined) await this.fail(inst.id, failure)
  }

  /** provision's steps: the progress token, the provider's create, the row `starting`. */
  async #create(inst: Instance, t: TemplateConfig, step: { created: boolean }): Promise<void> {
    const { c } = this
    const token = randomBytes(24).toString('base64url')
    const ready = await c.apply(inst.id, tr.issueProgressToken(inst, sha256(token), c.now()))
    if (!ready) {
      c.breaker.release(t.name, inst.id)
      return
    }
    c.routes.publish(ready)
    const provider = c.provider(t.name)
    const spec = this.#spec(ready, t, token)
    await c.d.faults?.beforeProviderCreate?.(inst.id)
    const res = await provider.create(spec, { log: c.d.log })
    step.created = true
    c.breaker.succeeded(t.name)
    await c.d.faults?.afterProviderCreate?.(inst.id)
    const next = await c.apply(inst.id, tr.markProvisioned(ready, res, c.now()))
    if (!next) {
      // Released (or replaced) while we were creating: do not leak what we made.
      const cur = await c.d.store.getInstance(inst.id)
      if (!cur || cur.providerRef !== res.ref) await provider.destroy(res.ref, { log: c.d.log }).catch(() => {})
      return
    }
    await c.audit(inst.id, 'provisioned', null, { ref: res.ref, generation: inst.generation })
    c.routes.publish(next)
    c.busy.delete(inst.id)
    // Claimed by a user while it was being created: its tags get the owner now.
    if (next.ownerId && !spec.labels[LABEL_OWNER]) this.relabelSoon(next)
    // A free instance that can now be handed to a queued request (serveQueue hands over starting ones).
    else if (!next.ownerId) c.background(c.capacity.serveQueue())
    c.background(this.watchStart(next.id, next))
  }

  #spec(inst: Instance, t: TemplateConfig, token: string): InstanceSpec {
    const { d } = this.c
    const labels: Record<string, string> = {
      [LABEL_POOL]: d.config.pool.id,
      [LABEL_INSTANCE]: inst.id,
      [LABEL_TEMPLATE]: t.name,
      'studiopool:generation': String(inst.generation),
    }
    Object.assign(labels, ownerLabels(inst))
    const progressUrl = d.progressUrl?.(inst.id) ?? `${d.config.server.publicUrl}/api/v1/instances/${inst.id}/progress`
    const basePath = `${d.config.server.basePath}/s/${inst.id}/`
    return {
      id: inst.id,
      poolId: d.config.pool.id,
      template: t,
      basePath,
      labels,
      progressUrl,
      progressToken: token,
      appToken: (d.appToken ?? this.c.fallbackAppToken)(inst.id, inst.generation),
      ownerId: inst.ownerId,
      sessionUrl: new URL(d.config.server.publicUrl).origin + basePath,
    }
  }

  /**
   * Probes a `starting` instance until its app answers, or its start timeout passes. `known`: the row
   * as the caller just wrote it, read instead of the store for the first probe (markReady is a
   * compare-and-set, so a row changed meanwhile is not marked ready).
   */
  async watchStart(id: string, known?: Instance): Promise<void> {
    const { c } = this
    if (c.busy.has(id)) return
    c.busy.add(id)
    try {
      const { probeHttp } = await import('../providers/http-probe.js')
      let delay = 100
      let first = known?.id === id ? known : undefined
      for (;;) {
        if (c.closed) return
        const inst = first ?? (await c.d.store.getInstance(id))
        first = undefined
        if (!inst || inst.state !== 'starting' || !inst.address) return
        const t = c.templates.get(inst.template)
        if (!t) return
        // `{{basePath}}`: apps that keep the prefix (Jupyter's base_url) answer only under it.
        const r = await probeHttp(
          inst.address,
          t.healthPath.replaceAll('{{basePath}}', `${c.d.config.server.basePath}/s/${inst.id}/`),
          {
            timeoutMs: 2000,
          },
        )
        if (r.ok) return await this.#markReady(inst)
        if (c.now() - (inst.startedAt ?? inst.createdAt) > t.startTimeoutMs) return // past its start timeout: the worker fails it
        await new Promise((r) => setTimeout(r, delay).unref())
        delay = Math.min(delay * 1.5, 1000)
      }
    } finally {
      c.busy.delete(id)
    }
  }

  async #markReady(inst: Instance): Promise<void> {
    const { c } = this
    const next = await c.apply(inst.id, tr.markReady(inst, c.now()))
    if (!next) return
    // Seconds to ready: from the user's request for a cold start (assignedAt), from creation for a warm instance.
    const from = next.assignedAt ?? inst.createdAt
    await c.audit(
      inst.id,
      'ready',
      null,
      { generation: inst.generation },
      { template: inst.template, userId: next.ownerId, secondsToReady: Math.round((c.now() - from) / 100) / 10 },
    )
    if (next.ownerId && next.assignedAt !== null)
      c.d.metrics?.timeToReady.observe({ template: next.template, outcome: 'cold' }, (c.now() - next.assignedAt) / 1000)
    c.routes.publish(next)
    // A free instance just became ready: queued requests take it now, not a worker cycle later.
    if (!next.ownerId) c.background(c.capacity.serveQueue())
  }

  /**
   * An instance could not start. Assigned ones are retried under the same id (a new generation) up to
   * MAX_START_ATTEMPTS, then end with reason `failed`; free ones fail and the warm pool refills.
   */
  async fail(id: string, reason: string): Promise<void> {
    const { c } = this
    const inst = await c.d.store.getInstance(id)
    if (!inst || !isLive(inst.state)) return
    const now = c.now()
    if (inst.providerRef) {
      await c
        .provider(inst.template)
        .destroy(inst.providerRef, { log: c.d.log })
        .catch((err) => c.d.log.warn({ instanceId: id, err: errText(err) }, 'destroy after failure failed'))
    }
    // With the template's breaker open a retry would fail the same way: the session ends with the cause.
    if (inst.ownerId && inst.generation + 1 < MAX_START_ATTEMPTS && !c.breaker.state(inst.template)?.open) {
      const next = await c.apply(id, tr.retryStart(inst, reason, now))
      await c.audit(id, 'retry', null, { reason })
      if (next) {
        c.routes.publish(next)
        c.background(this.provision(next))
      }
      return
    }
    // Only if nobody claimed it meanwhile (a request may take a free instance that is still being
    // created): a claimed one is retried for its user, and its assignment must not stay open.
    const next = await c.d.store.transaction(async (tx) => {
      const n = await c.apply(id, tr.fail(inst, reason, now), tx)
      if (n?.ownerId) await tx.closeAssignment(id, now, 'failed', c.cost(inst, now))
      return n
    })
    if (next?.ownerId && next.assignedAt !== null)
      c.d.metrics?.timeToReady.observe({ template: next.template, outcome: 'failed' }, (now - next.assignedAt) / 1000)
    if (!next) {
      const cur = await c.d.store.getInstance(id)
      if (cur && isLive(cur.state) && cur.generation === inst.generation && cur.ownerId !== inst.ownerId)
        return this.fail(id, reason)
      return
    }
    await c.audit(id, 'failed', null, { reason })
    c.routes.publish(next)
    c.background(nextTurn().then(() => c.capacity.afterCapacityFreed()))
  }

  /**
   * Replaces an assigned instance whose resource vanished (spot reclaim, crash): same instanceId and
   * URL, owner kept, a new generation, progress says the session is being restored.
   */
  async replace(inst: Instance, why: string): Promise<void> {
    const { c } = this
    const next = await c.apply(inst.id, tr.replace(inst, c.now(), why))
    if (!next) return
    await c.audit(inst.id, 'replaced', null, { why, generation: next.generation })
    c.routes.publish(next)
    await this.provision(next)
  }

  /** Admin restart: a fresh resource under the same id and URL, owner kept. */
  async restart(id: string, actor: string | null): Promise<Instance | undefined> {
    const { c } = this
    const inst = await c.d.store.getInstance(id)
    if (!inst || !['starting', 'ready', 'suspended'].includes(inst.state))
      throw new ConflictError(`cannot restart an instance that is ${inst?.state ?? 'absent'}`)
    if (inst.providerRef) await c.provider(inst.template).destroy(inst.providerRef, { log: c.d.log })
    await c.audit(id, 'restart', actor, {})
    await this.replace(inst, 'restart')
    return c.d.store.getInstance(id)
  }

  /** Stops the resource but keeps its disk (providers that support it, e.g. EC2 stop). */
  async suspend(id: string, actor: string | null): Promise<Instance | undefined> {
    const { c } = this
    const inst = await c.d.store.getInstance(id)
    if (!inst || inst.state !== 'ready' || !inst.providerRef)
      throw new ConflictError(`only a ready instance can be suspended (it is ${inst?.state ?? 'absent'})`)
    const provider = c.provider(inst.template)
    if (!provider.capabilities.supportsSuspend || !provider.stop)
      throw new ConflictError(`provider ${provider.name} cannot suspend instances`)
    await provider.stop(inst.providerRef, { log: c.d.log })
    const next = await c.apply(id, tr.markSuspended(c.now()))
    await c.audit(id, 'suspended', actor, {})
    if (next) c.routes.publish(next)
    return next
  }

  async resume(id: string, actor: string | null): Promise<Instance | undefined> {
    const { c } = this
    const inst = await c.d.store.getInstance(id)
    if (!inst || inst.state !== 'suspended' || !inst.providerRef)
      throw new ConflictError(`only a suspended instance can be resumed (it is ${inst?.state ?? 'absent'})`)
    const provider = c.provider(inst.template)
    if (!provider.start) throw new ConflictError(`provider ${provider.name} cannot resume instances`)
    await provider.start(inst.providerRef, { log: c.d.log })
    const next = await c.apply(id, tr.resume(c.now()))
    await c.audit(id, 'resumed', actor, {})
    if (next) {
      c.routes.publish(next)
      c.background(this.watchStart(id))
    }
    return next
  }

  /** Destroys the resource (idempotent), marks the row terminated, then serves the queue and tops up. */
  async destroy(inst: Instance, why: string, ref: string | null = inst.providerRef): Promise<void> {
    const { c } = this
    if (c.busy.has(inst.id)) return
    c.busy.add(inst.id)
    try {
      if (ref) await c.provider(inst.template).destroy(ref, { log: c.d.log })
      await c.apply(inst.id, tr.markTerminated(c.now()))
      await c.audit(inst.id, 'terminated', null, { why })
    } catch (err) {
      c.d.metrics?.providerErrors.inc({ provider: c.templates.get(inst.template)?.provider ?? '?', op: 'destroy' })
      c.d.log.warn({ instanceId: inst.id, err: errText(err) }, 'destroy failed; the worker will retry')
      return
    } finally {
      c.busy.delete(inst.id)
    }
    await c.capacity.afterCapacityFreed()
  }

  /**
   * Progress callback from the instance itself (MLiy's curl progress), with its per-instance token;
   * optionally with the address its app listens at (a Slurm job's wrapper), which the provider must
   * vouch for. The route gets the address at once; the instance is routable once its probe answers.
   */
  async reportProgress(
    id: string,
    token: string,
    progress: number,
    message: string,
    address?: ReportedAddress,
  ): Promise<Instance> {
    const { c } = this
    let inst = await c.d.store.getInstance(id)
    if (!inst || !isLive(inst.state)) throw new NotFoundError('no such live instance')
    if (!inst.progressTokenHash || !safeEqualHex(inst.progressTokenHash, sha256(token)))
      throw new AppError('UNAUTHORIZED', 'invalid progress token')
    if (address) inst = await this.#acceptAddress(inst, address)
    if (inst.state === 'ready') return inst // the app answers; progress is 100 already
    const next = await c.apply(id, tr.reportProgress(inst, progress, message, c.now()))
    if (!next) throw new ConflictError('instance changed concurrently')
    c.routes.publish(next)
    return next
  }

  async #acceptAddress(inst: Instance, a: ReportedAddress): Promise<Instance> {
    const { c } = this
    if (inst.state !== 'starting' || !inst.providerRef)
      throw new ConflictError(`an address is accepted only while the instance starts (it is ${inst.state})`)
    const t = c.templates.get(inst.template)
    const provider = t && c.d.providers.get(t.provider)
    const url =
      t && provider?.acceptAddress
        ? await provider.acceptAddress(inst.providerRef, a.host, a.port, { template: t, log: c.d.log })
        : null
    if (!url)
      throw new ValidationError(
        `address ${a.host.slice(0, 100)}:${a.port} refused: not where this instance's ${t?.provider ?? ''} resource runs`,
      )
    if (url === inst.address) return inst
    const next = await c.apply(inst.id, tr.reportAddress(inst, url, c.now()))
    if (!next) throw new ConflictError('instance changed concurrently')
    await c.audit(inst.id, 'address', null, { address: url })
    c.routes.publish(next)
    c.background(this.watchStart(inst.id))
    return next
  }

  /**
   * Records the owner and the assignment in the resource's labels (architecture.md contract 4), so that
   * `studiopool recover` can rebuild owners from the providers. Best effort and in the background:
   * never on the warm hit's path, a failure is logged and the store stays the truth.
   */
  relabelSoon(inst: Instance): void {
    const { c } = this
    const t = c.templates.get(inst.template)
    const provider: Provider | undefined = t && c.d.providers.get(t.provider)
    if (!provider?.relabel || !inst.providerRef) return
    const ref = inst.providerRef
    const labels = { [LABEL_INSTANCE]: inst.id, ...ownerLabels(inst) }
    c.background(
      nextTurn()
        .then(() => provider.relabel!(ref, labels, { log: c.d.log }))
        .catch((err) => {
          c.d.metrics?.providerErrors.inc({ provider: provider.name, op: 'relabel' })
          c.d.log.warn(
            { instanceId: inst.id, ref, err: errText(err) },
            'relabel failed; the owner is in the store only',
          )
        }),
    )
  }

  // --- what the worker finds at the providers -------------------------------------------------

  /** A `provisioning` row whose resource the provider made (a crash between the create and the store): it is starting. */
  async adopt(inst: Instance, res: tr.ResourceSeen): Promise<Instance | undefined> {
    const { c } = this
    const next = await c.apply(inst.id, tr.adopt(inst, res, c.now()))
    if (!next) return undefined
    await c.audit(inst.id, 'adopted', null, { ref: res.ref })
    c.routes.publish(next)
    c.background(this.watchStart(inst.id))
    return next
  }

  /** The provider lists the instance's resource under another ref or address: the route follows it. */
  async updateAddress(inst: Instance, res: tr.ResourceSeen, note?: tr.ProgressNote): Promise<Instance | undefined> {
    const { c } = this
    const next = await c.apply(inst.id, tr.updateAddress(inst, res, c.now(), note))
    if (next) c.routes.publish(next)
    return next
  }

  /** A free instance's resource is gone: the row ends and its route goes; the warm pool refills. */
  async markVanished(inst: Instance): Promise<Instance | undefined> {
    const { c } = this
    const next = await c.apply(inst.id, tr.markVanished(inst, c.now()))
    if (!next) return undefined
    await c.audit(inst.id, 'vanished', null, {})
    c.routes.publish(next)
    return next
  }
}

function safeEqualHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex')
  const y = Buffer.from(b, 'hex')
  return x.length === y.length && timingSafeEqual(x, y)
}
