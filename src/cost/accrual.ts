/**
 * Cost accrual (docs/cost.md "Cost accrual"): an instance's running time, provisioning to
 * terminated, as a chain of segments that do not overlap. A segment has one attribution (free:
 * the template's idle cost; assigned: the user, the requester and the user's groups), one market
 * and one price; a change of any of them starts a new segment. The chain is derived from facts the
 * store already holds (the instance row's times, the assignment history) plus the price in force
 * when the change is seen, so running `plan` again after a crash or a restart finds the same
 * boundaries and counts nothing twice.
 *
 * Pure: `plan` says what to write; src/pool/cost-accrual.ts reads and writes the store.
 */
import type { CostSegment, Market, NewSegment } from '../domain/cost-segment.js'

export type { CostSegment, Market, NewSegment, SegmentKind } from '../domain/cost-segment.js'

/** What to write for one instance: close its open segment (or drop it, when it has no length), then insert. */
export interface AccrualPlan {
  readonly close?: { readonly id: number; readonly endedAt: number }
  readonly drop?: { readonly id: number }
  readonly insert: readonly NewSegment[]
}

/** The fields of an instance accrual reads. */
export interface AccruingInstance {
  readonly id: string
  readonly template: string
  readonly state: string
  readonly createdAt: number
  readonly updatedAt: number
  readonly startedAt: number | null
  readonly endedAt: number | null
  readonly tags: Readonly<Record<string, string>>
}

/** One assignment of the instance (the history's row). */
export interface AssignedSpan {
  readonly userId: string
  readonly keyName: string | null
  readonly startedAt: number
  readonly endedAt: number | null
}

export interface AccrualInput {
  readonly instance: AccruingInstance
  /** The instance's open segment, if any. */
  readonly open: CostSegment | undefined
  /** Where the instance's last closed segment ended (null: it has none). */
  readonly lastEnd: number | null
  readonly assignments: readonly AssignedSpan[]
  /** The price in force now on a market, and the currency. */
  readonly price: (market: Market) => number
  readonly currency: string
  /** The market of a template's instances (an instance's `market` tag overrides it). */
  readonly market: Market
  readonly groupsOf: (userId: string) => readonly string[]
  readonly now: number
}

/** States in which the instance runs (and costs): asked for, starting, ready, being stopped. */
const RUNNING = new Set(['provisioning', 'starting', 'ready', 'stopping'])
const ENDED = new Set(['terminated', 'failed'])

interface Piece {
  readonly from: number
  readonly to: number
  readonly who: AssignedSpan | null
}

const sameWho = (s: CostSegment, who: AssignedSpan | null) =>
  who ? s.kind === 'assigned' && s.userId === who.userId && s.keyName === who.keyName : s.kind === 'idle'

/** The attribution of [from, to) cut at every assignment boundary. */
function pieces(from: number, to: number, spans: readonly AssignedSpan[]): Piece[] {
  const cuts = new Set<number>([from, to])
  for (const a of spans) {
    if (a.startedAt > from && a.startedAt < to) cuts.add(a.startedAt)
    if (a.endedAt !== null && a.endedAt > from && a.endedAt < to) cuts.add(a.endedAt)
  }
  const times = [...cuts].sort((a, b) => a - b)
  const out: Piece[] = []
  for (let i = 0; i + 1 < times.length; i++) {
    const t = times[i]!
    const who = spans.find((a) => a.startedAt <= t && (a.endedAt === null || a.endedAt > t)) ?? null
    const last = out[out.length - 1]
    if (last && last.who === who) out[out.length - 1] = { ...last, to: times[i + 1]! }
    else out.push({ from: t, to: times[i + 1]!, who })
  }
  return out
}

/** Where the instance's running time ends for now, and whether it goes on. */
function horizon(inst: AccruingInstance, now: number): { end: number; running: boolean } | null {
  if (RUNNING.has(inst.state)) return { end: now, running: true }
  if (ENDED.has(inst.state)) return { end: inst.endedAt ?? now, running: false }
  // Suspended: stopped (compute costs nothing), since its last change at the latest.
  if (inst.state === 'suspended') return { end: Math.min(inst.updatedAt, now), running: false }
  return null // queued: nothing runs yet
}

/**
 * Whether a stopped instance with no open segment has all of its running time up to `end` in closed
 * segments already. That is the case when it never ran (it ended in the queue), when its last
 * segment ends at `end`, or when it has not started again since its last segment ended. An
 * instance only runs again after a resume, which sets `startedAt`, so an instance ended while
 * suspended is not charged for its suspension.
 */
export function isAccrued(inst: Pick<AccruingInstance, 'startedAt'>, lastEnd: number | null, end: number): boolean {
  if (inst.startedAt === null) return true
  return lastEnd !== null && (lastEnd >= end || inst.startedAt <= lastEnd)
}

/**
 * What to write so that the instance's segments cover its running time up to now: the open
 * segment closed where its attribution, or the price, changed; closed segments for what happened
 * between two calls; the segment it runs on now left open. Empty when nothing changed.
 */
export function plan(input: AccrualInput): AccrualPlan {
  const { instance: inst, open, now } = input
  const h = horizon(inst, now)
  const runningFrom = inst.startedAt ?? inst.createdAt
  if (!h) return open ? { close: { id: open.id, endedAt: Math.max(open.startedAt, now) }, insert: [] } : { insert: [] }
  if (!open && !h.running && isAccrued(inst, input.lastEnd, h.end)) return { insert: [] }
  const from = open ? open.startedAt : Math.max(input.lastEnd ?? runningFrom, runningFrom)
  if (h.end <= from) {
    if (!open) return { insert: [] }
    return h.running ? { insert: [] } : { close: { id: open.id, endedAt: open.startedAt }, insert: [] }
  }
  const market: Market =
    inst.tags['market'] === 'spot' || inst.tags['market'] === 'on-demand' ? inst.tags['market'] : input.market
  const rate = input.price(market)
  const ps = pieces(from, h.end, input.assignments)
  const segment = (p: Piece, at: number, endedAt: number | null): NewSegment => ({
    instanceId: inst.id,
    template: inst.template,
    kind: p.who ? 'assigned' : 'idle',
    userId: p.who?.userId ?? null,
    keyName: p.who?.keyName ?? null,
    groups: p.who ? [...input.groupsOf(p.who.userId)] : [],
    market,
    ratePerHour: rate,
    currency: input.currency,
    startedAt: at,
    endedAt,
  })
  const insert: NewSegment[] = []
  let close: AccrualPlan['close']
  let drop: AccrualPlan['drop']
  let rest = ps
  if (open) {
    const first = ps[0]!
    if (!sameWho(open, first.who)) {
      // The attribution changed at the open segment's very start: it has no length.
      drop = { id: open.id }
    } else {
      rest = ps.slice(1)
      const priceChanged = h.running && rest.length === 0 && (open.ratePerHour !== rate || open.market !== market)
      if (priceChanged && now > open.startedAt) {
        // A new price (or market) applies from now: the open segment ends here, a new one begins.
        close = { id: open.id, endedAt: now }
        insert.push(segment(first, now, null))
      } else if (rest.length > 0 || !h.running) close = { id: open.id, endedAt: first.to }
    }
  }
  rest.forEach((p, i) => {
    const last = i === rest.length - 1
    insert.push(segment(p, p.from, last && h.running ? null : p.to))
  })
  return { ...(close ? { close } : {}), ...(drop ? { drop } : {}), insert }
}

/** A segment's cost within [from, to) (the open one up to `now`), in its currency. */
export function segmentCost(s: CostSegment, from: number, to: number, now: number): number {
  const start = Math.max(s.startedAt, from)
  const end = Math.min(s.endedAt ?? now, to)
  return end > start ? ((end - start) / 3_600_000) * s.ratePerHour : 0
}

/** Hours of a segment within [from, to). */
export function segmentHours(s: CostSegment, from: number, to: number, now: number): number {
  const start = Math.max(s.startedAt, from)
  const end = Math.min(s.endedAt ?? now, to)
  return end > start ? (end - start) / 3_600_000 : 0
}
