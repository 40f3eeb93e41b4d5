import type { RouteEntry } from '../domain/routes.js'
import type { InstanceShares } from '../domain/shared.js'

/** The instance generation counted. */
export type Metered = Pick<RouteEntry, 'instanceId' | 'generation' | 'template'>

/** What the gateway counted of one instance generation since its last report. */
interface Meter {
  readonly id: string
  readonly generation: number
  readonly template: string
  /** userId → seat-milliseconds (sticky routing's weight). */
  readonly seatMs: Map<string, number>
  /** userId → requests forwarded (per-request routing's weight). */
  readonly requests: Map<string, number>
  /** ms with at least one seat held. */
  seatBusyMs: number
  /** ms with at least one request in flight. */
  requestBusyMs: number
}

/**
 * The usage side of the gateway's book of shared instances (issue 14, docs/shared-pools.md "Cost"):
 * per instance and generation, per user, the seat-milliseconds and the requests since the last
 * report, and how long the instance was busy. `take` hands them over and starts again: what a
 * report carries is never sent twice, and a report that is lost loses that period (one second).
 */
export class SharedUsageMeter {
  readonly #meters = new Map<string, Meter>()
  /** Per-request: the last requests reported per instance generation, for a period with only requests in flight. */
  readonly #lastRequests = new Map<string, Map<string, number>>()

  #of(e: Metered): Meter {
    const key = `${e.instanceId}\0${e.generation}`
    let m = this.#meters.get(key)
    if (!m) {
      m = {
        id: e.instanceId,
        generation: e.generation,
        template: e.template,
        seatMs: new Map(),
        requests: new Map(),
        seatBusyMs: 0,
        requestBusyMs: 0,
      }
      this.#meters.set(key, m)
    }
    return m
  }

  /** Seat time of one accrual step: each user's seated ms, and the ms in which anyone was seated. */
  seats(e: Metered, perUser: ReadonlyMap<string, number>, busyMs: number): void {
    if (busyMs <= 0) return
    const m = this.#of(e)
    for (const [u, ms] of perUser) if (ms > 0) m.seatMs.set(u, (m.seatMs.get(u) ?? 0) + ms)
    m.seatBusyMs += busyMs
  }

  request(e: Metered, userId: string): void {
    const m = this.#of(e)
    m.requests.set(userId, (m.requests.get(userId) ?? 0) + 1)
  }

  requestBusy(e: Metered, ms: number): void {
    if (ms > 0) this.#of(e).requestBusyMs += ms
  }

  /** The template's shares since the last take (the routing decides the weight), and forgets them. */
  take(template: string, perRequest: boolean): InstanceShares[] {
    const out: InstanceShares[] = []
    for (const [key, m] of this.#meters) {
      if (m.template !== template) continue
      this.#meters.delete(key)
      let weights = perRequest ? m.requests : m.seatMs
      if (perRequest) {
        // A period busy only with requests begun earlier (a long one): its time goes with the last
        // users that sent requests, at weight 0 (each request is counted once, in its period).
        if (weights.size > 0) this.#lastRequests.set(key, weights)
        else weights = new Map([...(this.#lastRequests.get(key)?.keys() ?? [])].map((u) => [u, 0]))
      }
      const busyMs = Math.round(perRequest ? m.requestBusyMs : m.seatBusyMs)
      const users = [...weights].map(([userId, w]) => ({ userId, weight: Math.round(w) }))
      if (busyMs <= 0 || users.length === 0) continue
      out.push({ id: m.id, generation: m.generation, busyMs, users })
    }
    return out
  }

  /** Forgets the last requests of instances no longer routed. */
  forget(live: ReadonlySet<string>): void {
    for (const key of this.#lastRequests.keys())
      if (!live.has(key.slice(0, key.indexOf('\0')))) this.#lastRequests.delete(key)
  }
}
