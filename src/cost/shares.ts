/**
 * Cost as it is counted (docs/cost.md "Shared templates"): the cost segments' cost over a period,
 * with shared instances' time handed from their template's idle cost to the users who used it.
 *
 * A shared instance's segments are free (`idle`) segments: the account of its running time at its
 * price. Its users' use (SharedUse, per bucket of SHARE_BUCKET_MS) moves part of that idle cost to
 * them: in each bucket, the part the instance was busy (someone seated, or a request in flight:
 * the users' ms, at most all its running time there) is split among the users by their weight
 * (seat-ms, or requests) in the bucket. Within a bucket it is spread evenly over the running time,
 * so a period that cuts a bucket gets its part. The users' pieces come with an equal negative idle piece: the total, and
 * each template's and market's cost, stay exactly the segments' (rate × running time). Pure.
 */
import { segmentCost, segmentHours, type CostSegment } from './accrual.js'
import { SHARE_BUCKET_MS, type Market, type SharedUse } from '../domain/cost-segment.js'

export type { SharedUse } from '../domain/cost-segment.js'
export { SHARE_BUCKET_MS } from '../domain/cost-segment.js'

/** Whose cost a piece is: `idle` the template's, `assigned` a dedicated session's user, `shared` a shared instance's user. */
export type PieceKind = 'idle' | 'assigned' | 'shared'

/** Hours and cost within a period, with one attribution (negative: idle time handed to users). */
export interface CostPiece {
  readonly kind: PieceKind
  readonly template: string
  readonly market: Market
  readonly userId: string | null
  /** The requester: a dedicated session's API key; null for idle and shared time (a shared app belongs to no requester). */
  readonly keyName: string | null
  readonly groups: readonly string[]
  readonly hours: number
  readonly cost: number
}

const H = 3_600_000

/** ms of a segment within [from, to), the open one up to `now`. */
function overlapMs(s: CostSegment, from: number, to: number, now: number): number {
  return Math.max(0, Math.min(s.endedAt ?? now, to) - Math.max(s.startedAt, from))
}

function segmentPiece(s: CostSegment, from: number, to: number, now: number): CostPiece | null {
  const hours = segmentHours(s, from, to, now)
  if (hours <= 0) return null
  return {
    kind: s.kind,
    template: s.template,
    market: s.market,
    userId: s.kind === 'idle' ? null : s.userId,
    keyName: s.kind === 'idle' ? null : s.keyName,
    groups: s.kind === 'idle' ? [] : s.groups,
    hours,
    cost: segmentCost(s, from, to, now),
  }
}

/** One bucket's users of one instance: pieces for them, and the idle pieces they take. */
function bucketPieces(
  idle: readonly CostSegment[],
  uses: readonly SharedUse[],
  from: number,
  to: number,
  now: number,
): CostPiece[] {
  const b = uses[0]!.bucket
  const end = b + SHARE_BUCKET_MS
  // Only the shared template's own instance: a share naming another template's instance takes nothing.
  const segs = idle.filter((s) => s.template === uses[0]!.template && overlapMs(s, b, end, now) > 0)
  const runMs = segs.reduce((n, s) => n + overlapMs(s, b, end, now), 0)
  const busyMs = uses.reduce((n, u) => n + u.ms, 0)
  const weight = uses.reduce((n, u) => n + u.weight, 0)
  if (runMs <= 0 || busyMs <= 0 || weight <= 0) return []
  // Several gateways (or a skewed clock) may report more than the instance ran: at most all of it.
  const usedMs = Math.min(busyMs, runMs)
  const out: CostPiece[] = []
  for (const s of segs) {
    const inMs = overlapMs(s, Math.max(b, from), Math.min(end, to), now)
    if (inMs <= 0) continue
    const takenMs = (usedMs * inMs) / runMs
    for (const u of uses) {
      const ms = (takenMs * u.weight) / weight
      if (ms <= 0) continue
      out.push({
        kind: 'shared',
        template: s.template,
        market: s.market,
        userId: u.userId,
        keyName: null,
        groups: u.groups,
        hours: ms / H,
        cost: (ms / H) * s.ratePerHour,
      })
    }
    out.push({ ...segmentPiece(s, from, to, now)!, hours: -takenMs / H, cost: -(takenMs / H) * s.ratePerHour })
  }
  return out
}

/**
 * The pieces of cost within [from, to) (open segments up to `now`): every segment's, and the
 * shares of shared instances moved from idle to their users. Pass the segments overlapping the
 * period widened by one bucket on each side, so that a bucket cut by the period is seen whole.
 */
export function costPieces(
  segments: readonly CostSegment[],
  uses: readonly SharedUse[],
  from: number,
  to: number,
  now: number,
): CostPiece[] {
  const out: CostPiece[] = []
  const idleBy = new Map<string, CostSegment[]>()
  for (const s of segments) {
    const p = segmentPiece(s, from, to, now)
    if (p) out.push(p)
    if (s.kind !== 'idle') continue
    const list = idleBy.get(s.instanceId)
    if (list) list.push(s)
    else idleBy.set(s.instanceId, [s])
  }
  const buckets = new Map<string, SharedUse[]>()
  for (const u of uses) {
    if (u.bucket + SHARE_BUCKET_MS <= from || u.bucket >= to || !idleBy.has(u.instanceId)) continue
    const k = `${u.instanceId}\0${u.bucket}`
    const list = buckets.get(k)
    if (list) list.push(u)
    else buckets.set(k, [u])
  }
  for (const list of buckets.values()) out.push(...bucketPieces(idleBy.get(list[0]!.instanceId)!, list, from, to, now))
  return out
}

/** The bucket a time falls in. */
export function bucketOf(at: number): number {
  return Math.floor(at / SHARE_BUCKET_MS) * SHARE_BUCKET_MS
}
