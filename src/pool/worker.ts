import type { Logger } from 'pino'
import type { Config } from '../config/types.js'
import type { TemplateConfig } from '../config/types.js'
import { ACTIVE_STATES, type Instance } from '../domain/instance.js'
import type { Metrics } from '../metrics.js'
import type { Provider, ProviderInstance } from '../providers/provider.js'
import type { Store } from '../store/store.js'
import { errText, type PoolService } from './pool-service.js'

export interface WorkerDeps {
  readonly config: Config
  readonly store: Store
  readonly pool: PoolService
  readonly providers: ReadonlyMap<string, Provider>
  readonly log: Logger
  readonly metrics?: Metrics
  readonly now?: () => number
}

export interface CycleReport {
  readonly ms: number
  readonly listCalls: number
  readonly replaced: number
  readonly adopted: number
  readonly reaped: number
  readonly culled: number
  readonly failed: number
}

/** How long a just-created resource may be missing from list() before it counts as gone. */
const LIST_GRACE_MS = 30_000

/** The dashboard charts the last 24 hours; keep two days of samples. */
const SAMPLE_RETENTION_MS = 2 * 86_400_000

/**
 * The worker loop (architecture.md "Worker"): reconcile the store with every provider's list(), fail
 * instances stuck past their start timeout, cull idle and over-age instances, serve the queue, top up
 * warm pools, reap orphans after a grace. One list() call per provider per cycle; everything else is
 * decided from the store, so idle timers and lifetimes survive restarts.
 *
 * It never writes instance state itself: what it finds it hands to the pool (adopt, updateAddress,
 * markVanished, replace, fail, release…), which publishes every change to the route table.
 *
 * With several replicas only the leader runs cycles (store.tryLead: a Postgres advisory lock).
 */
export class Worker {
  readonly #d: WorkerDeps
  readonly #now: () => number
  /** Orphans (tagged with our pool, unknown to the store): first seen at. In memory: a restart restarts the grace. */
  readonly #orphans = new Map<string, number>()
  #timer: NodeJS.Timeout | undefined
  #running: Promise<CycleReport | undefined> | undefined
  #stopped = false
  #lastSample = 0

  constructor(deps: WorkerDeps) {
    this.#d = deps
    this.#now = deps.now ?? Date.now
  }

  start(): void {
    this.#stopped = false
    const tick = async () => {
      if (this.#stopped) return
      await this.runOnce().catch((err) => this.#d.log.error({ err: errText(err) }, 'worker cycle failed'))
      if (!this.#stopped) this.#timer = setTimeout(tick, this.#d.config.worker.intervalMs)
    }
    this.#timer = setTimeout(tick, 0)
  }

  /** Runs one cycle now (or joins the running one). Returns undefined when not the leader. */
  runOnce(): Promise<CycleReport | undefined> {
    this.#running ??= this.#cycle().finally(() => (this.#running = undefined))
    return this.#running
  }

  async stop(): Promise<void> {
    this.#stopped = true
    if (this.#timer) clearTimeout(this.#timer)
    await this.#running?.catch(() => {})
  }

  async #cycle(): Promise<CycleReport | undefined> {
    if (!(await this.#d.store.tryLead())) return undefined
    const t0 = performance.now()
    const { store, pool } = this.#d
    const report: Counts = { listCalls: 0, replaced: 0, adopted: 0, reaped: 0, culled: 0, failed: 0 }

    const active = await store.listInstances({ states: ACTIVE_STATES })
    const byProvider = new Map<string, Instance[]>()
    for (const inst of active) {
      const name = this.#template(inst.template)?.provider ?? '?'
      let list = byProvider.get(name)
      if (!list) byProvider.set(name, (list = []))
      list.push(inst)
    }

    // 1. Reconcile with each provider in use: one list() per provider.
    for (const [name, provider] of this.#d.providers)
      await this.#reconcileProvider(name, provider, byProvider.get(name) ?? [], report)

    // 2. Start timeouts, probes, idle culling, lifetimes.
    const now = this.#now()
    for (const inst of active) await this.#timers(inst, now, report)

    // 3. Queue first, then warm pools.
    await pool.serveQueue()
    await pool.topUp()

    // 4. Once a minute: samples for the dashboard's 24 h chart, and metrics; purge old ended rows.
    if (now - this.#lastSample >= 60_000) {
      this.#lastSample = now
      const counts = await store.countByState()
      await store.recordStateSamples(
        counts.map((c) => ({ at: now, template: c.template, state: c.state, count: c.count })),
      )
      await store.purgeStateSamples(now - SAMPLE_RETENTION_MS)
      await pool.purgeEnded(now - this.#d.config.worker.retainEndedMs)
    }

    const ms = performance.now() - t0
    this.#d.metrics?.workerCycle.observe(ms / 1000)
    return { ms, ...report }
  }

  #template(name: string): TemplateConfig | undefined {
    return this.#d.config.templates.find((x) => x.name === name)
  }

  /** One provider's list() against the store's active instances of its templates, then its orphans. */
  async #reconcileProvider(name: string, provider: Provider, mine: readonly Instance[], report: Counts): Promise<void> {
    const { log } = this.#d
    let resources: ProviderInstance[]
    try {
      resources = await provider.list({ log })
      report.listCalls++
    } catch (err) {
      this.#d.metrics?.providerErrors.inc({ provider: name, op: 'list' })
      log.warn({ provider: name, err: errText(err) }, 'provider list failed; skipping its reconcile this cycle')
      return
    }
    const listed: Listed = { live: new Map(), refs: new Map() }
    for (const r of resources) {
      listed.refs.set(r.ref, r)
      if (r.state !== 'terminated') listed.live.set(r.instanceId, r)
    }
    const known = new Set<string>()
    // Refs too: a resource handed over to a queued request (pool serveQueue) may still carry the
    // free instance's id in its labels when its relabel failed or the provider has none.
    const knownRefs = new Set<string>()
    for (const inst of mine) {
      known.add(inst.id)
      if (inst.providerRef) knownRefs.add(inst.providerRef)
      if (!this.#d.pool.isBusy(inst.id)) await this.#reconcile(inst, listed, report, provider)
    }
    await this.#reapOrphans(name, provider, resources, listed, { known, knownRefs }, report)
  }

  /** What the provider lists for one active instance decides: adopt, follow, replace, end, or finish a stop. */
  async #reconcile(inst: Instance, { live, refs }: Listed, report: Counts, provider: Provider): Promise<void> {
    const { pool, log } = this.#d
    const res = inst.providerRef ? refs.get(inst.providerRef) : undefined
    const found = res && res.state !== 'terminated' ? res : live.get(inst.id)
    switch (inst.state) {
      case 'provisioning': {
        if (found && found.ref !== inst.providerRef) {
          // The provider made it but the store was not updated (crash between the two): adopt it.
          if (await pool.adopt(inst, found)) report.adopted++
        } else if (!found) {
          pool.spawn(pool.provision(inst)) // idempotent on the id: a lost create is made again
        }
        return
      }
      case 'starting':
      case 'ready':
      case 'suspended': {
        if (
          found &&
          (found.state === 'running' ||
            found.state === 'pending' ||
            (found.state === 'stopped' && inst.state === 'suspended'))
        ) {
          // Launch progress the provider reports (a batch queue's pending reason), while starting.
          const note =
            provider.capabilities.reportsProgress &&
            inst.state === 'starting' &&
            found.message &&
            found.message !== inst.progressMessage
              ? { message: found.message, progress: found.progress }
              : undefined
          if (found.ref !== inst.providerRef || (found.address && found.address !== inst.address) || note)
            await pool.updateAddress(inst, found, note)
          return
        }
        // The backend ended it for a reason of its own (a time limit; a job that failed at start).
        if (res && res.state === 'terminated' && res.ref === inst.providerRef && res.endReason) {
          if (res.endReason === 'lifetime') return void (await pool.release(inst.id, 'lifetime'))
          if (inst.state === 'starting') return void (await pool.fail(inst.id, res.message ?? 'the resource failed'))
        }
        // Clouds are eventually consistent: a just-launched resource may not be listed yet. Only a
        // resource listed as terminated, or absent past the grace, counts as vanished.
        if (!res && inst.state === 'starting' && this.#now() - (inst.startedAt ?? inst.createdAt) < LIST_GRACE_MS)
          return
        if (inst.ownerId) {
          report.replaced++
          log.warn(
            { instanceId: inst.id, ref: inst.providerRef },
            'assigned instance vanished; replacing it under the same id',
          )
          pool.spawn(pool.replace(inst, found ? `resource ${found.state}` : 'resource gone'))
        } else await pool.markVanished(inst)
        return
      }
      case 'stopping':
        // A destroy that failed or was cut short (a restart): the same path as a release's, with what the provider lists now.
        return pool.finishStop(inst, found?.ref ?? null)
      case 'queued':
      case 'failed':
      case 'terminated':
        return // not listed by listActive / nothing a provider holds
    }
  }

  /** Orphans: tagged with our pool, running, and not an active instance in the store; reaped after the grace. */
  async #reapOrphans(
    name: string,
    provider: Provider,
    resources: readonly ProviderInstance[],
    { refs }: Listed,
    { known, knownRefs }: { readonly known: ReadonlySet<string>; readonly knownRefs: ReadonlySet<string> },
    report: Counts,
  ): Promise<void> {
    const { store, pool, log } = this.#d
    const now = this.#now()
    const seen = new Set<string>()
    for (const r of resources) {
      if (r.state === 'terminated' || known.has(r.instanceId) || knownRefs.has(r.ref)) continue
      seen.add(r.ref)
      const row = r.instanceId ? await store.getInstance(r.instanceId) : undefined
      const ended = row && (row.state === 'terminated' || row.state === 'failed')
      const first = this.#orphans.get(r.ref) ?? now
      this.#orphans.set(r.ref, first)
      if (ended || now - first >= this.#d.config.worker.orphanGraceMs) {
        log.warn(
          { ref: r.ref, instanceId: r.instanceId || undefined, provider: name, ended: !!ended },
          'reaping orphaned resource',
        )
        await provider.destroy(r.ref, { log }).then(
          () => {
            report.reaped++
            this.#orphans.delete(r.ref)
          },
          (err) => log.warn({ ref: r.ref, err: errText(err) }, 'reaping failed'),
        )
        await pool.audit(r.instanceId || null, 'orphan-reaped', null, { ref: r.ref, provider: name })
      }
    }
    for (const ref of this.#orphans.keys())
      if (!seen.has(ref) && refs.get(ref)?.state !== 'terminated' && !refs.has(ref)) this.#orphans.delete(ref)
  }

  /** Start timeouts and probes, idle culling, lifetimes: decided from the store, so they survive restarts. */
  async #timers(inst: Instance, now: number, report: Counts): Promise<void> {
    const { pool } = this.#d
    const t = this.#template(inst.template)
    if (!t || pool.isBusy(inst.id)) return
    if (inst.state === 'provisioning' || inst.state === 'starting') {
      if (now - (inst.startedAt ?? inst.createdAt) > t.startTimeoutMs) {
        report.failed++
        await pool.fail(inst.id, `did not start within ${Math.round(t.startTimeoutMs / 1000)}s`)
      } else if (inst.state === 'starting') pool.spawn(pool.watchStart(inst.id))
      return
    }
    if (inst.state !== 'ready' && inst.state !== 'suspended') return
    if (inst.ownerId) {
      // Idle time counts from when the user could first use it: a cold start (minutes on EC2) is not idleness.
      const last = Math.max(inst.lastActivityAt ?? 0, inst.assignedAt ?? 0, inst.readyAt ?? 0)
      if (t.idleTimeoutMs > 0 && now - last >= t.idleTimeoutMs) {
        report.culled++
        await pool.release(inst.id, 'idle')
        return
      }
      if (t.maxLifetimeMs > 0 && now - (inst.assignedAt ?? inst.createdAt) >= t.maxLifetimeMs) {
        report.culled++
        await pool.release(inst.id, 'lifetime')
      }
    } else if (t.maxLifetimeMs > 0 && now - inst.createdAt >= t.maxLifetimeMs) {
      // Free warm instances are recycled after their lifetime too (fresh images, no drift).
      report.culled++
      await pool.release(inst.id, 'lifetime')
    }
  }
}

/** CycleReport's counters, filled as the cycle runs. */
type Counts = { -readonly [K in Exclude<keyof CycleReport, 'ms'>]: number }

/** What one list() returned: live resources by instance id, all of them by ref. */
interface Listed {
  readonly live: Map<string, ProviderInstance>
  readonly refs: Map<string, ProviderInstance>
}
