import type { TemplateConfig } from '../config/types.js'
import { ENDED_STATES, isLive, type EndReason, type Instance } from '../domain/instance.js'
import type { SessionStopStatus } from '../domain/pending-stop.js'
import type { RouteEntry } from '../domain/routes.js'
import type { SharedGate, SharedGateSnapshot, SharedLoad, SharedRefusal } from '../domain/shared.js'
import type { ProgressNote, ResourceSeen } from '../domain/transitions.js'
import type { IsolationReport } from '../providers/provider.js'
import type { BreakerState } from './create-breaker.js'
import { PendingStops } from './pending-stops.js'
import { Capacity } from './pool-capacity.js'
import { CostService } from './cost-service.js'
import { PoolCore, type PoolDeps } from './pool-core.js'
import { Lifecycle, type ReportedAddress } from './pool-lifecycle.js'
import { Requests, type RequestInput, type RequestResult } from './pool-request.js'
import { WarmPlanner, type ForecastPoint } from './pool-warm.js'
import type { WarmTarget } from '../schedule/warm-target.js'
import { SharedPools, type SharedStatus } from './pool-shared.js'
import { sharedRefusal } from './shared-gate.js'

export { errText, ownerLabels, type FaultHooks, type PoolDeps } from './pool-core.js'
export { queuePositions, type RoutePublisher } from './pool-routes.js'
export type { PendingStops } from './pending-stops.js'
export type { RequestInput, RequestOutcome, RequestResult } from './pool-request.js'
export type { SharedBounds, SharedStatus } from './pool-shared.js'

/**
 * The one place that decides (architecture.md conventions `pool/`): assignment, release, warm-pool top-up, the queue,
 * provisioning and replacement, and every instance-state write (domain/transitions.ts, applied by
 * PoolCore.apply; eslint.config.js forbids them elsewhere). The worker (worker.ts) calls into it on a
 * timer; the API on requests. A facade over its concerns:
 * - pool-request.ts: request and assignment, release;
 * - pool-lifecycle.ts: create, readiness, failure, replacement, suspend/resume, destroy, and what
 *   the worker finds at the providers;
 * - pool-capacity.ts: the queue, the warm pools' top-up, backoff;
 * - pool-routes.ts: the route projection, published around every change;
 * - pending-stops.ts: when each session will be stopped and why (the warning, issue 13).
 *
 * Atomicity: every check-a-cap-then-insert runs inside `store.withPoolLock`; warm hits use
 * `store.assignWarm` (row locks with SKIP LOCKED); the partial unique index on (owner, template) is the
 * last line of defence against a user holding two live instances.
 */
export class PoolService implements SharedGate {
  readonly #c: PoolCore
  readonly #requests: Requests
  readonly #lifecycle: Lifecycle
  readonly #capacity: Capacity
  /** Cost accrual and budgets (docs/cost.md): the worker's cost step, the request check, usage, budgetStopAt. */
  readonly cost: CostService

  /** When each session will be stopped, and why (issue 13): the banner's and the dashboard's warning. */
  readonly pendingStops: PendingStops
  readonly #warm: WarmPlanner
  readonly #shared: SharedPools

  constructor(deps: PoolDeps) {
    const c = new PoolCore(deps)
    this.#c = c
    this.pendingStops = new PendingStops({
      templates: c.templates,
      log: deps.log,
      warnBeforeMs: deps.config.widget.warnBeforeMs,
      canSuspend: (template) => {
        const t = c.templates.get(template)
        const p = t && deps.providers.get(t.provider)
        return !!p && p.capabilities.supportsSuspend && typeof p.stop === 'function'
      },
    })
    this.#lifecycle = c.lifecycle = new Lifecycle(c)
    this.#capacity = c.capacity = new Capacity(c)
    this.#requests = new Requests(c)
    this.cost = new CostService({
      config: deps.config,
      store: deps.store,
      log: deps.log,
      now: c.now,
      audit: (id, event, detail) => c.audit(id, event, 'budget', detail),
      release: (id, reason, actor) => this.release(id, reason, actor),
    })
    // A budget's scheduled stop is a pending stop like an idle cull: the banner and the dashboard warn of it.
    this.pendingStops.register('budget', (inst) => this.cost.budgetStopAt(inst))
    c.price = (template, market) => this.cost.accrual.price(template, market ?? this.cost.accrual.market(template))
    this.#warm = new WarmPlanner(c)
    this.#shared = new SharedPools(c, (id, reason, actor) => this.release(id, reason, actor), deps.sharedBounds)
  }

  template(name: string): TemplateConfig {
    return this.#requests.template(name)
  }

  /** Why the template cannot serve now: a problem found at start, or its open breaker (with the cause). */
  unavailableReason(template: string): string | undefined {
    return this.#c.d.unavailable?.get(template) ?? this.#c.breaker.openReason(template)
  }

  /** Templates whose creates are failing (backoff or open breaker), for /readyz, the dashboard, metrics. */
  breakers(): BreakerState[] {
    return this.#c.breaker.all()
  }

  /** What each provider in use isolates (architecture.md contract 5), for /readyz, the admin view and the login rules. */
  isolation(): (IsolationReport & { readonly provider: string })[] {
    const out: (IsolationReport & { readonly provider: string })[] = []
    for (const [name, p] of this.#c.d.providers) {
      const r = p.isolation?.()
      if (r) out.push({ provider: name, ...r })
    }
    return out
  }

  // --- request and assignment -------------------------------------------------------------

  /** Seed REQUEST_RSTUDIO: the user's live instance, a warm one, a new one within caps, or the queue. */
  async request(input: RequestInput): Promise<RequestResult> {
    // A hard budget refuses new sessions (403 BUDGET_EXCEEDED); the user's live one is still theirs.
    if (this.#c.d.config.budgets.length > 0)
      await this.cost.checkRequest({
        userId: input.userId,
        template: this.#requests.template(input.template ?? this.#c.d.config.pool.defaultTemplate).name,
        keyName: input.keyName ?? null,
        byOwner: input.byOwner,
      })
    return this.#requests.request(input)
  }

  /**
   * Ends the user's assignment and terminates the instance. Idempotent: releasing an ended or unknown
   * instance resolves (the seed's DELETE answers OK twice). `due`: asked again of the row the stop
   * reads in its own transaction (pool-request.ts).
   */
  release(
    id: string,
    reason: EndReason,
    actor: string | null = null,
    due?: (fresh: Instance, now: number) => boolean,
  ): Promise<Instance | undefined> {
    return this.#requests.release(id, reason, actor, due)
  }

  // --- pending stops (issue 13) ---------------------------------------------------------------

  /** The session's pending stop as the warning shows it now; undefined when it is not live. */
  async stopStatus(id: string): Promise<SessionStopStatus | undefined> {
    const inst = await this.#c.d.store.getInstance(id)
    return inst ? this.pendingStops.status(inst, this.#c.now()) : undefined
  }

  /**
   * "Keep working": the user's activity, now, written through at once (the gateway's batch may be
   * seconds away), so that the next worker cycle does not cull. Then the new status.
   */
  async keepWorking(id: string): Promise<SessionStopStatus | undefined> {
    const inst = await this.#c.d.store.getInstance(id)
    if (!inst || !isLive(inst.state)) return undefined
    await this.#c.d.store.recordActivity([{ id, at: this.#c.now() }])
    return this.stopStatus(id)
  }

  // --- instance lifecycle -------------------------------------------------------------------

  /** Creates the provider resource for a `provisioning` row and records it (idempotent on the id). */
  provision(inst: Instance): Promise<void> {
    return this.#lifecycle.provision(inst)
  }

  /** Probes a `starting` instance until its app answers, or its start timeout passes. */
  watchStart(id: string): Promise<void> {
    return this.#lifecycle.watchStart(id)
  }

  /** An instance could not start: retried for its user up to a limit, else it fails. */
  fail(id: string, reason: string): Promise<void> {
    return this.#lifecycle.fail(id, reason)
  }

  /** A new resource under the same id for an assigned instance whose resource vanished. */
  replace(inst: Instance, why: string): Promise<void> {
    return this.#lifecycle.replace(inst, why)
  }

  /** Admin restart: a fresh resource under the same id and URL, owner kept. */
  restart(id: string, actor: string | null): Promise<Instance | undefined> {
    return this.#lifecycle.restart(id, actor)
  }

  /** Stops the resource but keeps its disk (providers that support it, e.g. EC2 stop). */
  suspend(id: string, actor: string | null): Promise<Instance | undefined> {
    return this.#lifecycle.suspend(id, actor)
  }

  resume(id: string, actor: string | null): Promise<Instance | undefined> {
    return this.#lifecycle.resume(id, actor)
  }

  /**
   * Finishes a `stopping` instance the last attempt left behind (the worker's retry). `ref` is what
   * the provider lists for it now, which may differ from the row's (a create that ended after the release).
   */
  finishStop(inst: Instance, ref: string | null): Promise<void> {
    return this.#lifecycle.destroy(inst, 'retry', ref)
  }

  /** Progress callback from the instance itself (MLiy's curl progress), with its per-instance token. */
  reportProgress(
    id: string,
    token: string,
    progress: number,
    message: string,
    address?: ReportedAddress,
  ): Promise<Instance> {
    return this.#lifecycle.reportProgress(id, token, progress, message, address)
  }

  /** The worker found the resource of a `provisioning` row (a crash between create and store): it is starting. */
  adopt(inst: Instance, res: ResourceSeen): Promise<Instance | undefined> {
    return this.#lifecycle.adopt(inst, res)
  }

  /** The worker found the resource under another ref or address: the row and the route follow it. */
  updateAddress(inst: Instance, res: ResourceSeen, note?: ProgressNote): Promise<Instance | undefined> {
    return this.#lifecycle.updateAddress(inst, res, note)
  }

  /** The worker found a free instance's resource gone: it ends, and its route goes. */
  markVanished(inst: Instance): Promise<Instance | undefined> {
    return this.#lifecycle.markVanished(inst)
  }

  /** Deletes ended rows (terminated, failed) that ended before `before`; at most `limit` looked at. */
  async purgeEnded(before: number, limit = 1000): Promise<number> {
    const { store } = this.#c.d
    let n = 0
    for (const o of await store.listInstances({ states: ENDED_STATES, limit }))
      if (o.endedAt !== null && o.endedAt < before) {
        await store.deleteInstance(o.id)
        n++
      }
    return n
  }

  isBusy(id: string): boolean {
    return this.#c.busy.has(id)
  }

  // --- capacity and the queue -----------------------------------------------------------------

  /** Serves queued requests, oldest first: a free instance handed over, or a new one within the caps. */
  serveQueue(): Promise<void> {
    return this.#capacity.serveQueue()
  }

  /**
   * From start-up (replica-steps.ts): every queued row another process writes is reported to
   * queueChanged while `watching()` says so; then the pool skips its queue reads while it knows
   * the queue is empty (queue-hint.ts).
   */
  watchQueue(watching: () => boolean): void {
    this.#c.queue.watch(watching)
  }

  /**
   * A queued row (another process's, or one not seen) may exist: the next queue check reads the
   * store. Had the queue been taken for empty, a check meanwhile may have skipped the row: it is
   * served now, unless `serve` is false (the caller serves the queue itself next).
   */
  queueChanged(serve = true): void {
    if (this.#c.queue.changed() && serve) this.#c.background(this.#capacity.serveQueue())
  }

  /** Tops each template's free instances up to minFree, within the caps (calls coalesce). */
  topUp(): Promise<void> {
    return this.#capacity.topUp()
  }

  /**
   * Sets each scheduled or predictive template's effective floor and cap for now, and stops free
   * instances above the floor (pool-warm.ts). The worker calls it every cycle, before the top-up.
   */
  planWarm(): Promise<void> {
    return this.#warm.plan()
  }

  /** The effective warm-pool targets set by the last planWarm (templates with a schedule or a warm-pool policy). */
  warmTargets(): ReadonlyMap<string, WarmTarget> {
    return this.#warm.targets()
  }

  /** The forecasts recorded for the template's last slots (the dashboard's forecast beside actuals). */
  forecastHistory(template: string): Promise<ForecastPoint[]> {
    return this.#warm.recorded(template)
  }

  /** The template's measured start time (the 90th percentile of recent starts), ms. */
  measuredStart(t: TemplateConfig): Promise<number> {
    return this.#warm.measuredStart(t)
  }

  // --- shared templates (issue 14, pool-shared.ts) ---------------------------------------------

  /**
   * The gateway's load report for shared templates; templates whose load changed are planned at
   * once, and the users' shares of the instances are recorded for their cost.
   */
  reportSharedLoad(loads: readonly SharedLoad[]): void {
    this.#shared.reportLoad(loads)
    this.cost.recordShared(loads)
  }

  /** A visitor of a shared template: refused now (schedule, hard budget), or null (shared-gate.ts). */
  admit(template: string, userId: string, groups: readonly string[]): SharedRefusal | null {
    const t = this.#c.d.config.templates.find((x) => x.name === template)
    return t ? sharedRefusal(t, this.cost.budgets, { userId, groups }, this.#c.now()) : null
  }

  /** The budget half of the gate for split-mode gateways (they decide schedules themselves). */
  sharedGateSnapshot(): SharedGateSnapshot {
    return { budgets: this.cost.budgets.exceededHard() }
  }

  /** Scales every shared template (the worker's cycle). */
  scaleShared(): Promise<void> {
    return this.#shared.scaleAll()
  }

  /** Each shared template's bounds, wanted size, queue and instances with their connections. */
  sharedStatus(): Promise<SharedStatus[]> {
    return this.#shared.statusWithInstances()
  }

  // --- route projection -----------------------------------------------------------------------

  /** Publishes every live instance to the route table (start-up, resync). */
  publishAll(): Promise<void> {
    return this.#c.routes.publishAll()
  }

  routeEntry(inst: Instance, queuePosition: number | null): RouteEntry {
    return this.#c.routes.routeEntry(inst, queuePosition)
  }

  /**
   * Bumped on every change this process publishes (assignments, releases, state changes), so that
   * readers can cache what depends on them (GET_STATUS lists) until the next change.
   */
  get version(): number {
    return this.#c.routes.version
  }

  // --- background work ------------------------------------------------------------------------

  audit(
    instanceId: string | null,
    event: string,
    actor: string | null,
    detail: Record<string, unknown>,
  ): Promise<void> {
    return this.#c.audit(instanceId, event, actor, detail)
  }

  /** Runs work in the background, tracked so that drain() and close() wait for it. */
  spawn(p: Promise<unknown>): void {
    this.#c.background(p)
  }

  /** No background task runs, no retry is scheduled and no template is within a backoff: what tests wait for before checking the pool's invariants. */
  get quiet(): boolean {
    const c = this.#c
    if (c.pending.size > 0 || this.#capacity.backoffPending) return false
    const now = c.now()
    for (const name of c.templates.keys()) if ((c.breaker.state(name)?.nextAttemptAt ?? 0) > now) return false
    return true
  }

  /** Waits until no background task is left (bounded by rounds, since tasks spawn tasks). */
  drain(rounds = 50): Promise<void> {
    return this.#c.drain(rounds)
  }

  async close(): Promise<void> {
    this.#c.closed = true
    this.#capacity.close()
    await this.#c.drain(5)
    await this.cost.shared.flush()
  }
}
