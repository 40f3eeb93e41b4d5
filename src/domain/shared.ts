/**
 * Shared app pools (architecture.md contract 6, issue 14): the settings of a `mode: shared`
 * template, the load the gateway reports for it, and the pure scale decision the pool acts on.
 * No I/O: the time comes in as `now`.
 */

export type SharedRouting = 'sticky' | 'per-request'

/** A shared template's settings (decoded from the template's `mode: shared` keys). */
export interface SharedSettings {
  readonly routing: SharedRouting
  readonly minInstances: number
  /** Connections (sticky: users' WebSockets; per-request: requests in flight) one instance takes at most. */
  readonly maxConnectionsPerInstance: number
  /** 0 < f ≤ 1: a new instance starts when the instances' load passes this share of their capacity. */
  readonly loadFactor: number
  /** Load must stay below what fewer instances carry this long before one is drained. */
  readonly scaleInCooldownMs: number
  /** A draining instance ends when its last connection closes, or after this long. */
  readonly drainGraceMs: number
  /** Per-request routing: requests waiting for a free slot at most (0 = no queue: 503 at once). */
  readonly queueSize: number
  readonly queueTimeoutMs: number
  /** An instance is recycled (replacement first, then drained) after this many requests; 0 = never. */
  readonly recycleAfterRequests: number
  /** …or after this long running; 0 = never. The template's maxLifetime also recycles. */
  readonly recycleAfterMs: number
}

/** Tag on a shared instance's row: when it began draining (epoch ms), and why. */
export const TAG_DRAINING = 'shared.draining'
export const TAG_DRAIN_REASON = 'shared.drainReason'

export type DrainReason = 'scale-in' | 'idle' | 'recycle'

/** What the gateway saw of one shared instance. */
export interface InstanceLoad {
  readonly id: string
  /** Open connections now (sticky: seats — users with a WebSocket or just pinned; per-request: requests in flight). */
  readonly connections: number
  /** Requests forwarded to it since it came up (recycleAfterRequests). */
  readonly requests: number
}

/** One gateway's report for one shared template. */
export interface SharedLoad {
  readonly template: string
  readonly at: number
  /**
   * Which gateway reports (split mode: a random id per gateway process). The pool adds up the fresh
   * reports of every source; absent = the one in-process gateway (or an older gateway).
   */
  readonly source?: string
  readonly instances: readonly InstanceLoad[]
  /** Users shown the progress page, or requests queued, because no instance had room. */
  readonly waiting: number
  /** Per-request: requests in the gateway's queue now, and the longest wait of the last report period (ms). */
  readonly queued: number
  readonly maxQueueWaitMs: number
  /**
   * Who used the template's instances since the gateway's previous report (cost attribution,
   * docs/shared-pools.md "Cost"). Absent from an older gateway: its instances' cost stays idle.
   */
  readonly shares?: readonly InstanceShares[]
}

/**
 * What users used of one shared instance (one generation of it) over one report period: the
 * instance's cost over that time is split among them by `weight`, for the part of it that was busy.
 */
export interface InstanceShares {
  readonly id: string
  readonly generation: number
  /** ms of the period in which someone used it: sticky, at least one seat; per-request, at least one request in flight. */
  readonly busyMs: number
  /**
   * Per user: seat-milliseconds (sticky) or requests begun (per-request) in the period; weight 0:
   * only a request begun earlier was in flight (the busy time goes with its user).
   */
  readonly users: readonly { readonly userId: string; readonly weight: number }[]
}

/** Where the gateway reports shared load: the pool in one process, the API in split mode (`POST /api/v1/gateway/shared-load`). */
export interface SharedLoadSink {
  reportSharedLoad(loads: readonly SharedLoad[]): void
}

/** A shared instance as the planner sees it. */
export interface PlanInstance {
  readonly id: string
  readonly state: 'provisioning' | 'starting' | 'ready' | 'stopping'
  /** Epoch ms the current generation started (provisioning), for recycleAfterMs and maxLifetime. */
  readonly startedAt: number
  readonly readyAt: number | null
  /** Last user activity the store knows (idle timers survive restarts). */
  readonly lastActivityAt: number | null
  readonly drainingSince: number | null
}

export interface PlanInput {
  readonly now: number
  readonly settings: SharedSettings
  /** Effective bounds now: the template's minInstances/maxInstances, narrowed by schedules and budgets (issue 13's hook). */
  readonly minInstances: number
  readonly maxInstances: number
  /** The template's idleTimeout (scale to minInstances when nobody used it this long; 0 = never) and maxLifetime (recycle). */
  readonly idleTimeoutMs: number
  readonly maxLifetimeMs: number
  readonly instances: readonly PlanInstance[]
  /** The latest report, or undefined when none is fresh (then nothing is drained for want of load). */
  readonly load: SharedLoad | undefined
  /** Since when the wanted count has stayed below the serving count (the cool-down), or null. */
  readonly overSince: number | null
}

export interface Plan {
  /** Instances the load wants (within the bounds). */
  readonly desired: number
  /** New instances to start now. */
  readonly start: number
  /** Instances to begin draining, with why. */
  readonly drain: readonly { readonly id: string; readonly reason: DrainReason }[]
  /** Instances to end now: drained (no connections left, or past the grace), or not needed before they served. */
  readonly end: readonly { readonly id: string; readonly reason: DrainReason }[]
  /** The cool-down clock to keep for the next decision. */
  readonly overSince: number | null
}

/** How many instances `connections` users (or requests) want at this load factor: Posit Connect's rule. */
export function wantedInstances(connections: number, s: SharedSettings): number {
  if (connections <= 0) return 0
  const perInstance = Math.max(1, s.maxConnectionsPerInstance * s.loadFactor)
  return Math.ceil(connections / perInstance)
}

/** Whether an instance is due to be recycled (its replacement starts first, then it drains). */
export function dueForRecycle(i: PlanInstance, requests: number, input: PlanInput): boolean {
  const s = input.settings
  const age = input.now - i.startedAt
  if (s.recycleAfterRequests > 0 && requests >= s.recycleAfterRequests) return true
  if (s.recycleAfterMs > 0 && age >= s.recycleAfterMs) return true
  return input.maxLifetimeMs > 0 && age >= input.maxLifetimeMs
}

/**
 * The scale decision for one shared template. Serving instances are the live ones not draining
 * and not due for recycling; the load (connections plus waiting users) wants
 * `ceil(load / (maxConnectionsPerInstance × loadFactor))` of them, within the bounds. More are
 * started at once; fewer are drained only after the cool-down, least loaded first (one not ready
 * yet ends at once), and at least one stays until nobody used the template for idleTimeout →
 * the minimum (zero: scale to zero). An instance due for recycling drains once enough others are ready.
 */
export function planShared(input: PlanInput): Plan {
  const { now, settings: s, load } = input
  const conns = new Map(load?.instances.map((l) => [l.id, l]) ?? [])
  const live = input.instances.filter((i) => i.state !== 'stopping')
  const draining = live.filter((i) => i.drainingSince !== null)
  const open = live.filter((i) => i.drainingSince === null)
  const recycling = open.filter((i) => i.state === 'ready' && dueForRecycle(i, conns.get(i.id)?.requests ?? 0, input))
  const serving = open.filter((i) => !recycling.includes(i))

  const total = [...conns.values()].reduce((n, l) => n + l.connections, 0) + (load?.waiting ?? 0)
  const lastUse = Math.max(0, ...input.instances.map((i) => Math.max(i.lastActivityAt ?? 0, i.readyAt ?? 0)))
  const idle =
    total === 0 && input.idleTimeoutMs > 0 && (input.instances.length === 0 || now - lastUse >= input.idleTimeoutMs)
  let desired = idle ? input.minInstances : Math.max(input.minInstances, wantedInstances(total, s))
  // In use, or used within the idle time: one stays (scale to zero is the idle timer's, not the cool-down's).
  if (total > 0 || (!idle && live.length > 0)) desired = Math.max(desired, 1)
  desired = Math.min(desired, input.maxInstances)

  const start = Math.max(0, desired - serving.length)
  const drain: { id: string; reason: DrainReason }[] = []
  const end: { id: string; reason: DrainReason }[] = []

  // Recycling: once the others that serve are ready (the replacement came up), the old one drains.
  const readyServing = serving.filter((i) => i.state === 'ready').length
  for (const r of recycling) if (readyServing >= Math.min(desired, 1)) drain.push({ id: r.id, reason: 'recycle' })

  let overSince = input.overSince
  const excess = serving.length - desired
  if (excess <= 0 || (!load && !idle)) overSince = null
  else {
    overSince ??= now
    if (idle || now - overSince >= s.scaleInCooldownMs) {
      const reason: DrainReason = idle ? 'idle' : 'scale-in'
      // Not yet serving anyone: ended at once; then the least loaded ready ones drain.
      const order = [...serving].sort(
        (a, b) =>
          Number(a.state === 'ready') - Number(b.state === 'ready') ||
          (conns.get(a.id)?.connections ?? 0) - (conns.get(b.id)?.connections ?? 0) ||
          a.startedAt - b.startedAt,
      )
      for (const i of order.slice(0, excess)) {
        if (i.state === 'ready') drain.push({ id: i.id, reason })
        else end.push({ id: i.id, reason })
      }
      overSince = null
    }
  }

  // Draining instances end when empty (by a fresh report) or after the grace.
  for (const d of draining) {
    const empty = load !== undefined && (conns.get(d.id)?.connections ?? 0) === 0
    if (empty || now - d.drainingSince! >= s.drainGraceMs) end.push({ id: d.id, reason: 'scale-in' })
  }
  return { desired, start, drain, end, overSince }
}

/** Why a shared template turns a visitor away now: a hard budget, or outside an `unavailable` schedule. */
export interface SharedRefusal {
  readonly status: 403 | 503
  readonly code: 'BUDGET_EXCEEDED' | 'OUTSIDE_SCHEDULE'
  readonly message: string
  /** Seconds until it may change (the schedule's next opening), when known. */
  readonly retryAfterSeconds?: number
}

/**
 * The pool's word on a visitor of a shared template (issue 14: schedules and budgets apply to shared
 * templates as to dedicated ones). Synchronous: it reads what the pool already knows (the schedule,
 * the budgets as of their last refresh, at most one worker cycle old), so the gateway's hot path
 * never waits for the store.
 */
export interface SharedGate {
  admit(template: string, userId: string, groups: readonly string[]): SharedRefusal | null
}

/**
 * The budget half of the gate for a split-mode gateway (`GET /api/v1/gateway/shared-gate`): every
 * hard budget exceeded now, as the key it covers (a user, a group, a template, `pool`) and the
 * refusal's message. The gateway decides schedules itself, from the same configuration.
 */
export interface SharedGateSnapshot {
  readonly budgets: readonly { readonly scope: string; readonly key: string; readonly message: string }[]
}

/**
 * Several gateways' fresh reports for one template as one load: connections and requests per
 * instance added up, waiting and queued added up, the longest queue wait, the newest time.
 */
export function mergeLoads(reports: readonly SharedLoad[]): SharedLoad | undefined {
  if (reports.length <= 1) return reports[0]
  const per = new Map<string, { connections: number; requests: number }>()
  for (const r of reports)
    for (const i of r.instances) {
      const a = per.get(i.id) ?? { connections: 0, requests: 0 }
      a.connections += i.connections
      a.requests += i.requests
      per.set(i.id, a)
    }
  return {
    template: reports[0]!.template,
    at: Math.max(...reports.map((r) => r.at)),
    instances: [...per].map(([id, a]) => ({ id, ...a })),
    waiting: reports.reduce((n, r) => n + r.waiting, 0),
    queued: reports.reduce((n, r) => n + r.queued, 0),
    maxQueueWaitMs: Math.max(...reports.map((r) => r.maxQueueWaitMs)),
  }
}
