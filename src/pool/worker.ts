import type { Logger } from 'pino'
import type { Config } from '../config/types.js'
import type { TemplateConfig } from '../config/types.js'
import { ACTIVE_STATES, type Instance } from '../domain/instance.js'
import { idleStopAt, lifetimeStopAt } from '../domain/pending-stop.js'
import type { Metrics } from '../metrics.js'
import type { Provider, ProviderInstance } from '../providers/provider.js'
import type { Store } from '../store/store.js'
import { nextTurn } from './pool-core.js'
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

/**
 * The cycle reads the active instances in pages of this many, and gives the event loop a turn
 * whenever it has run for SLICE_MS without one: one read of every active row and one loop over them
 * held the (single) thread for 17–43 ms per cycle at a few thousand instances on SQLite, and every
 * warm claim arriving meanwhile waited for it (bench:api at minFree). By time, not by count, so a
 * small pool's cycle is not stretched by turns it does not need (background work runs in them).
 */
const PAGE = 1000
const SLICE_MS = 4

/**
 * Measures a run of synchronous work: a promise of the next turn once it has run for SLICE_MS, else
 * undefined (not a resolved promise: awaiting one per instance is what #reconcile avoids).
 */
class Slice {
  #since = performance.now()
  yieldIfLong(): Promise<void> | undefined {
    if (performance.now() - this.#since < SLICE_MS) return undefined
    return nextTurn().then(() => {
      this.#since = performance.now()
    })
  }
}

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
 * With several replicas only the leader runs cycles (store.tryLead: a Postgres advisory lock), fenced
 * by its epoch (store.fenced): a replica that lost the lead cannot change an instance (docs/ha.md).
 */
export class Worker {
  readonly #d: WorkerDeps
  readonly #now: () => number
  /** Orphans (tagged with our pool, unknown to the store): first seen at. In memory: a restart restarts the grace. */
  readonly #orphans = new Map<string, number>()
  #timer: NodeJS.Timeout | undefined
  #leaderTimer: NodeJS.Timeout | undefined
  #leading = false
  #leadingSince: number | undefined
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
    // Take-over (docs/ha.md): a standby tries the lock every leaderPoll and runs a cycle as soon as
    // it wins; the leader's try is its heartbeat (it renews the server's idle_session_timeout).
    this.#leaderTimer = setInterval(() => {
      const was = this.#leading
      void this.#checkLead()
        .then((lead) => {
          if (lead && !was && !this.#stopped) void this.runOnce().catch(() => {})
        })
        .catch(() => {})
    }, this.#d.config.ha.leaderPollMs)
  }

  /** Whether this replica leads the worker now, its epoch and since when (for /readyz). */
  leadership(): { readonly leading: boolean; readonly epoch: number | undefined; readonly since: number | undefined } {
    return { leading: this.#leading, epoch: this.#d.store.leaderEpoch(), since: this.#leadingSince }
  }

  async #checkLead(): Promise<boolean> {
    const lead = await this.#d.store.tryLead()
    if (lead !== this.#leading) {
      this.#leading = lead
      this.#leadingSince = lead ? this.#now() : undefined
      this.#d.metrics?.leaderChanges.inc({ to: lead ? 'leader' : 'standby' })
      this.#d.metrics?.leader.set(lead ? 1 : 0)
    }
    return lead
  }

  /** Runs one cycle now (or joins the running one). Returns undefined when not the leader. */
  runOnce(): Promise<CycleReport | undefined> {
    this.#running ??= this.#cycle().finally(() => (this.#running = undefined))
    return this.#running
  }

  async stop(): Promise<void> {
    this.#stopped = true
    if (this.#timer) clearTimeout(this.#timer)
    if (this.#leaderTimer) clearInterval(this.#leaderTimer)
    await this.#running?.catch(() => {})
  }

  async #cycle(): Promise<CycleReport | undefined> {
    if (!(await this.#checkLead())) return undefined
    // Every write of the cycle, and of the tasks it starts, carries this leader's epoch (fence.ts).
    return this.#d.store.fenced(() => this.#lead())
  }

  async #lead(): Promise<CycleReport> {
    const t0 = performance.now()
    const { store, pool } = this.#d
    const report: Counts = { listCalls: 0, replaced: 0, adopted: 0, reaped: 0, culled: 0, failed: 0 }

    const active = await this.#listActive()
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
    const slice = new Slice()
    for (const inst of active) {
      const acted = this.#timers(inst, now, report)
      if (acted) await acted
      const turn = slice.yieldIfLong()
      if (turn) await turn
    }

    // 3. Cost accrual and budgets (docs/cost.md): enforcement lags at most one cycle.
    await pool.cost.cycle(now).catch((err) => this.#d.log.warn({ err: errText(err) }, 'cost step failed'))

    // 4. Queue first, then warm pools (to the floors and caps of the schedules and forecasts).
    await pool.planWarm()
    // From the store each cycle, whatever this process believes of the queue (queue-hint.ts).
    pool.queueChanged(false)
    await pool.serveQueue()
    await pool.topUp()
    await pool.scaleShared()

    // 5. Once a minute: samples for the dashboard's 24 h chart, and metrics; purge old ended rows.
    if (now - this.#lastSample >= 60_000) {
      this.#lastSample = now
      const counts = await store.countByState()
      await store.recordStateSamples(
        counts.map((c) => ({ at: now, template: c.template, state: c.state, count: c.count })),
      )
      await store.purgeStateSamples(now - SAMPLE_RETENTION_MS)
      await pool.purgeEnded(now - this.#d.config.worker.retainEndedMs)
      const retainCost = this.#d.config.cost.retainMs
      if (retainCost > 0) await store.purgeCost(now - retainCost)
    }

    const ms = performance.now() - t0
    this.#d.metrics?.workerCycle.observe(ms / 1000)
    return { ms, ...report }
  }

  /** Every active instance, read a page at a time with a turn between pages (PAGE). */
  async #listActive(): Promise<Instance[]> {
    const out: Instance[] = []
    const slice = new Slice()
    for (let after: string | null = null; ;) {
      const page = await this.#d.store.listInstancesPage({ states: ACTIVE_STATES }, after, PAGE)
      out.push(...page)
      if (page.length < PAGE) return out
      after = page[page.length - 1]!.id
      await slice.yieldIfLong()
    }
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
    const slice = new Slice()
    for (const inst of mine) {
      known.add(inst.id)
      if (inst.providerRef) knownRefs.add(inst.providerRef)
      const acted = this.#d.pool.isBusy(inst.id) ? undefined : this.#reconcile(inst, listed, report, provider)
      if (acted) await acted
      const turn = slice.yieldIfLong()
      if (turn) await turn
    }
    await this.#reapOrphans(name, provider, resources, listed, { known, knownRefs }, report)
  }

  /**
   * What the provider lists for one active instance decides: adopt, follow, replace, end, or finish
   * a stop. A promise only when there is something to do: awaiting one per instance let the
   * replacements it spawns run inside the cycle (every await a turn of the microtask queue), which
   * doubled the churn cycle on SQLite (bench:reconcile).
   */
  #reconcile(inst: Instance, { live, refs }: Listed, report: Counts, provider: Provider): Promise<unknown> | undefined {
    const { pool, log } = this.#d
    const res = inst.providerRef ? refs.get(inst.providerRef) : undefined
    const found = res && res.state !== 'terminated' ? res : live.get(inst.id)
    switch (inst.state) {
      case 'provisioning': {
        if (found && found.ref !== inst.providerRef) {
          // The provider made it but the store was not updated (crash between the two): adopt it.
          return pool.adopt(inst, found).then((n) => {
            if (n) report.adopted++
          })
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
            return pool.updateAddress(inst, found, note)
          return
        }
        // The backend ended it for a reason of its own (a time limit; a job that failed at start).
        if (res && res.state === 'terminated' && res.ref === inst.providerRef && res.endReason) {
          if (res.endReason === 'lifetime') return pool.release(inst.id, 'lifetime')
          if (inst.state === 'starting') return pool.fail(inst.id, res.message ?? 'the resource failed')
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
          // The provider's reason, when it gives one (evicted, OOMKilled, node lost): shown while restoring.
          const why = res?.state === 'terminated' && res.message ? res.message : undefined
          pool.spawn(pool.replace(inst, why ?? (found ? `resource ${found.state}` : 'resource gone')))
          return
        }
        return pool.markVanished(inst)
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

  /**
   * Start timeouts and probes, idle culling, lifetimes: decided from the store, so they survive
   * restarts. A promise only when it acts (see #reconcile).
   */
  #timers(inst: Instance, now: number, report: Counts): Promise<unknown> | undefined {
    const { pool } = this.#d
    const t = this.#template(inst.template)
    if (!t || pool.isBusy(inst.id)) return
    if (inst.state === 'provisioning' || inst.state === 'starting') {
      if (now - (inst.startedAt ?? inst.createdAt) > t.startTimeoutMs) {
        report.failed++
        return pool.fail(inst.id, `did not start within ${Math.round(t.startTimeoutMs / 1000)}s`)
      } else if (inst.state === 'starting') pool.spawn(pool.watchStart(inst.id))
      return
    }
    if (t.shared && !inst.ownerId) return // idle and lifetime of shared instances: drained by pool-shared.ts
    // The same deadlines the warning shows (domain/pending-stop.ts): the banner and the cull never disagree.
    // `inst` was read at the start of the cycle, before the providers' list() calls: the stop asks
    // the deadline again of the row it reads in its own transaction, so activity written since
    // (the gateway's batch, "keep working") keeps the session.
    const idleDue = (i: Instance, at: number) => {
      const due = idleStopAt(i, t.idleTimeoutMs)
      return due !== null && at >= due
    }
    if (idleDue(inst, now)) {
      report.culled++
      return pool.release(inst.id, 'idle', null, idleDue)
    }
    // Free warm instances are recycled after their lifetime too (fresh images, no drift).
    const lifeAt = lifetimeStopAt(inst, t.maxLifetimeMs)
    if (lifeAt !== null && now >= lifeAt) {
      report.culled++
      return pool.release(inst.id, 'lifetime')
    }
    return
  }
}

/** CycleReport's counters, filled as the cycle runs. */
type Counts = { -readonly [K in Exclude<keyof CycleReport, 'ms'>]: number }

/** What one list() returned: live resources by instance id, all of them by ref. */
interface Listed {
  readonly live: Map<string, ProviderInstance>
  readonly refs: Map<string, ProviderInstance>
}
