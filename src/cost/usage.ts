/**
 * The usage report (GET /api/v1/usage, the dashboard): cost and hours over a period, from the
 * cost pieces (shares.ts: the cost segments, with shared instances' time moved to their users). Pure.
 */
import type { CostPiece } from './shares.js'

export interface UsageLine {
  readonly key: string
  readonly hours: number
  readonly cost: number
}

export interface UsageReport {
  readonly from: number
  readonly to: number
  readonly currency: string
  /** Everything: idle and assigned. */
  readonly total: number
  /** Free (warm) instances' time and shared instances' time nobody used: the templates' idle cost. */
  readonly idle: number
  /** Shared instances' time used by users (in byUser and byGroup, not byRequester). */
  readonly shared: number
  readonly byUser: readonly UsageLine[]
  readonly byGroup: readonly UsageLine[]
  readonly byRequester: readonly UsageLine[]
  /** Per template, idle and assigned together, with the idle part. */
  readonly byTemplate: readonly (UsageLine & { readonly idle: number; readonly idleHours: number })[]
  /** Spot and on-demand apart. */
  readonly byMarket: readonly UsageLine[]
}

const r2 = (n: number) => Math.round(n * 100) / 100
const r3 = (n: number) => Math.round(n * 1000) / 1000

class Tally {
  readonly #m = new Map<string, { hours: number; cost: number; idle: number; idleHours: number }>()
  add(key: string, hours: number, cost: number, idle: boolean): void {
    const a = this.#m.get(key) ?? { hours: 0, cost: 0, idle: 0, idleHours: 0 }
    a.hours += hours
    a.cost += cost
    if (idle) {
      a.idle += cost
      a.idleHours += hours
    }
    this.#m.set(key, a)
  }
  lines(): UsageLine[] {
    return [...this.#m]
      .map(([key, a]) => ({ key, hours: r3(a.hours), cost: r2(a.cost) }))
      .sort((x, y) => y.cost - x.cost || x.key.localeCompare(y.key))
  }
  withIdle() {
    return [...this.#m]
      .map(([key, a]) => ({ key, hours: r3(a.hours), cost: r2(a.cost), idle: r2(a.idle), idleHours: r3(a.idleHours) }))
      .sort((x, y) => y.cost - x.cost || x.key.localeCompare(y.key))
  }
}

export function usageReport(pieces: readonly CostPiece[], from: number, to: number, currency: string): UsageReport {
  const user = new Tally()
  const group = new Tally()
  const requester = new Tally()
  const template = new Tally()
  const market = new Tally()
  let total = 0
  let idle = 0
  let shared = 0
  for (const p of pieces) {
    const isIdle = p.kind === 'idle'
    total += p.cost
    if (isIdle) idle += p.cost
    if (p.kind === 'shared') shared += p.cost
    template.add(p.template, p.hours, p.cost, isIdle)
    market.add(p.market, p.hours, p.cost, isIdle)
    if (isIdle) continue
    if (p.userId) user.add(p.userId, p.hours, p.cost, false)
    if (p.keyName) requester.add(p.keyName, p.hours, p.cost, false)
    for (const g of p.groups) group.add(g, p.hours, p.cost, false)
  }
  return {
    from,
    to,
    currency,
    total: r2(total),
    idle: r2(idle),
    shared: r2(shared),
    byUser: user.lines(),
    byGroup: group.lines(),
    byRequester: requester.lines(),
    byTemplate: template.withIdle(),
    byMarket: market.lines(),
  }
}
