import type { SharedLoad } from '../domain/shared.js'
import type { CompiledRoute } from './route-table.js'
import { SharedUsageMeter, type Metered } from './shared-usage.js'

/** A user given an instance but whose WebSocket is not open yet holds their seat this long. */
export const PIN_MS = 30_000
/** A user whose last WebSocket closed keeps their seat this long (a page reload reconnects). */
export const RECONNECT_MS = 5_000
/** A user on the progress page counts as waiting this long after their last refresh. */
const WAITING_MS = 10_000
/**
 * An instance that failed a request gets no new ones for this long while another runs (it is
 * probably dying; the worker ends it and its route goes within seconds). A new generation is not avoided.
 */
const AVOID_MS = 30_000

/** What the gateway counts of one shared instance. */
interface Counts {
  /** userId → open WebSockets, and until when their seat is held without one (0 = not held). */
  readonly users: Map<string, { ws: number; heldUntil: number }>
  /** Requests (and WebSockets) in flight: per-request routing's load. */
  outstanding: number
  /** Requests forwarded since the gateway first saw the instance (recycleAfterRequests). */
  requests: number
  avoidUntil: number
  /** The generation counted: a replaced instance starts at 0 again. */
  generation: number
  /** The instance generation, for the usage meter. */
  entry: Metered
  /** Seat time is metered up to here (users' seats did not change since). */
  accruedAt: number
  /** Per-request busy time is metered up to here while requests are in flight. */
  busySince: number
}

/** One request waiting in a per-request template's queue. */
export interface Waiter {
  readonly since: number
  /** An instance this request must not go to (the one that failed it). */
  readonly except?: string
  readonly go: (route: CompiledRoute) => void
  readonly fail: (why: 'timeout' | 'closed') => void
}

/**
 * The gateway's book of shared instances (issue 14): seats per instance for sticky routing
 * (users with an open WebSocket, or just pinned by their page load), requests in flight for
 * per-request routing, users waiting for an instance, and the bounded queue of per-request
 * templates. In memory only; `loads()` is what the gateway reports to the pool every second.
 */
export class SharedBook {
  readonly #counts = new Map<string, Counts>()
  readonly #waiting = new Map<string, Map<string, number>>()
  readonly #queues = new Map<string, Waiter[]>()
  readonly #maxWait = new Map<string, number>()
  readonly #usage = new SharedUsageMeter()

  constructor(readonly now: () => number = Date.now) {}

  #of(route: CompiledRoute): Counts {
    const id = route.entry.instanceId
    let c = this.#counts.get(id)
    if (!c || c.generation !== route.entry.generation) {
      if (c) this.#meter(c) // the old generation's use up to now is still reported
      const now = this.now()
      c = {
        users: new Map(),
        outstanding: 0,
        requests: 0,
        avoidUntil: 0,
        generation: route.entry.generation,
        entry: route.entry,
        accruedAt: now,
        busySince: now,
      }
      this.#counts.set(id, c)
    }
    return c
  }

  /**
   * Meters the seat time since the last step: every user's seat state has not changed since
   * (each change meters first), so each was seated for a prefix of it, and someone was seated for
   * the longest of those prefixes. Requests in flight are metered as busy time up to now.
   */
  #meter(c: Counts): void {
    const now = this.now()
    const from = c.accruedAt
    if (c.outstanding > 0 && now > c.busySince) this.#usage.requestBusy(c.entry, now - c.busySince)
    c.busySince = now
    if (now <= from) return
    c.accruedAt = now
    const perUser = new Map<string, number>()
    let busyUntil = from
    for (const [id, u] of c.users) {
      const until = u.ws > 0 ? now : Math.min(now, u.heldUntil)
      if (until <= from) continue
      perUser.set(id, until - from)
      busyUntil = Math.max(busyUntil, until)
    }
    this.#usage.seats(c.entry, perUser, busyUntil - from)
  }

  /** Sticky load: users with an open WebSocket, plus users whose seat is held (just pinned, or reconnecting). */
  seats(route: CompiledRoute): number {
    const c = this.#counts.get(route.entry.instanceId)
    if (!c) return 0
    this.#meter(c)
    const now = this.now()
    let n = 0
    for (const [id, u] of c.users)
      if (u.ws > 0 || u.heldUntil > now) n++
      else c.users.delete(id)
    return n
  }

  outstanding(route: CompiledRoute): number {
    return this.#counts.get(route.entry.instanceId)?.outstanding ?? 0
  }

  avoided(route: CompiledRoute): boolean {
    return (this.#counts.get(route.entry.instanceId)?.avoidUntil ?? 0) > this.now()
  }

  /** The user's page was served by this instance: their seat is held until their WebSocket opens. */
  pin(route: CompiledRoute, userId: string): void {
    const c = this.#of(route)
    this.#meter(c)
    const u = c.users.get(userId)
    if (u) {
      if (u.ws === 0) u.heldUntil = this.now() + PIN_MS
    } else c.users.set(userId, { ws: 0, heldUntil: this.now() + PIN_MS })
  }

  wsOpened(route: CompiledRoute, userId: string): void {
    const c = this.#of(route)
    this.#meter(c)
    const u = c.users.get(userId) ?? { ws: 0, heldUntil: 0 }
    u.ws++
    u.heldUntil = 0
    c.users.set(userId, u)
  }

  wsClosed(route: CompiledRoute, userId: string): void {
    const c = this.#counts.get(route.entry.instanceId)
    const u = c?.users.get(userId)
    if (!c || !u) return
    this.#meter(c)
    u.ws = Math.max(0, u.ws - 1)
    if (u.ws === 0) u.heldUntil = this.now() + RECONNECT_MS
  }

  /** A request (or WebSocket) forwarded; `userId` is metered with a request (per-request routing's weight). */
  began(route: CompiledRoute, userId?: string): void {
    const c = this.#of(route)
    if (c.outstanding === 0) c.busySince = this.now()
    c.outstanding++
    c.requests++
    if (userId !== undefined) this.#usage.request(c.entry, userId)
  }

  ended(route: CompiledRoute): void {
    const c = this.#counts.get(route.entry.instanceId)
    if (!c || c.generation !== route.entry.generation || c.outstanding === 0) return
    if (c.outstanding === 1) this.#meter(c)
    c.outstanding--
  }

  avoid(route: CompiledRoute): void {
    this.#of(route).avoidUntil = this.now() + AVOID_MS
  }

  /** A user saw the progress page: they want an instance. Returns true when they are the first waiting. */
  wait(template: string, userId: string): boolean {
    let m = this.#waiting.get(template)
    if (!m) this.#waiting.set(template, (m = new Map()))
    const first = this.#waitingCount(template) === 0
    m.set(userId, this.now())
    return first
  }

  served(template: string, userId: string): void {
    this.#waiting.get(template)?.delete(userId)
  }

  #waitingCount(template: string): number {
    const m = this.#waiting.get(template)
    if (!m) return 0
    const now = this.now()
    for (const [u, at] of m) if (now - at >= WAITING_MS) m.delete(u)
    return m.size
  }

  // --- the per-request queue ------------------------------------------------------------------

  queueLength(template: string): number {
    return this.#queues.get(template)?.length ?? 0
  }

  /** False when the queue is full. */
  enqueue(template: string, w: Waiter, max: number): boolean {
    let q = this.#queues.get(template)
    if (!q) this.#queues.set(template, (q = []))
    if (q.length >= max) return false
    q.push(w)
    return true
  }

  /** The oldest waiter, without taking it out. */
  peek(template: string): Waiter | undefined {
    return this.#queues.get(template)?.[0]
  }

  /** The oldest waiter, taken out of the queue (its wait is recorded). */
  dequeue(template: string): Waiter | undefined {
    const w = this.#queues.get(template)?.shift()
    if (w) this.#noteWait(template, this.now() - w.since)
    return w
  }

  remove(template: string, w: Waiter): void {
    const q = this.#queues.get(template)
    const i = q?.indexOf(w) ?? -1
    if (i >= 0) q!.splice(i, 1)
  }

  /** Waiters past the timeout, taken out of the queue. */
  expired(template: string, timeoutMs: number): Waiter[] {
    const q = this.#queues.get(template)
    if (!q?.length) return []
    const now = this.now()
    const out = q.filter((w) => now - w.since >= timeoutMs)
    if (out.length)
      this.#queues.set(
        template,
        q.filter((w) => now - w.since < timeoutMs),
      )
    for (const w of out) this.#noteWait(template, now - w.since)
    return out
  }

  #noteWait(template: string, ms: number): void {
    this.#maxWait.set(template, Math.max(this.#maxWait.get(template) ?? 0, ms))
  }

  // --- reports --------------------------------------------------------------------------------

  /** One template's load, and its users' shares since the last report; the longest queue wait restarts with each report. */
  load(template: string, routes: Iterable<CompiledRoute>, perRequest: boolean): SharedLoad {
    for (const c of this.#counts.values()) if (c.entry.template === template) this.#meter(c)
    const instances = [...routes].map((r) => ({
      id: r.entry.instanceId,
      connections: perRequest ? this.outstanding(r) : this.seats(r),
      requests: this.#counts.get(r.entry.instanceId)?.requests ?? 0,
    }))
    const maxQueueWaitMs = this.#maxWait.get(template) ?? 0
    this.#maxWait.delete(template)
    const queued = this.queueLength(template)
    return {
      template,
      at: this.now(),
      instances,
      waiting: this.#waitingCount(template) + queued,
      queued,
      maxQueueWaitMs,
      shares: this.#usage.take(template, perRequest),
    }
  }

  /** Forgets instances that are no longer routed (their use up to now is in the next report). */
  prune(live: ReadonlySet<string>): void {
    for (const [id, c] of this.#counts)
      if (!live.has(id)) {
        this.#meter(c)
        this.#counts.delete(id)
      }
    this.#usage.forget(live)
  }
}
