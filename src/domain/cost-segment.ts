/** A cost segment (docs/cost.md "Cost accrual"): one stretch of an instance's running time at one price, for one attribution. */

export const MARKETS = ['on-demand', 'spot'] as const
export type Market = (typeof MARKETS)[number]

export type SegmentKind = 'idle' | 'assigned'

export interface CostSegment {
  readonly id: number
  readonly instanceId: string
  readonly template: string
  readonly kind: SegmentKind
  /** The user (assigned) or null (idle). */
  readonly userId: string | null
  /** The requester (API key name) of the assignment. */
  readonly keyName: string | null
  /** The user's groups when the segment started (config `cost.groups`). */
  readonly groups: readonly string[]
  readonly market: Market
  readonly ratePerHour: number
  readonly currency: string
  /** Epoch ms. */
  readonly startedAt: number
  /** null while open (the instance runs on it). */
  readonly endedAt: number | null
}

export type NewSegment = Omit<CostSegment, 'id'>

/**
 * A user's use of a shared instance within one bucket (docs/cost.md "Shared templates"): their
 * `weight` there (seat-milliseconds, or requests), and `ms`, their part of the time the instance
 * was busy in each report (the bucket's busy time is the sum over its users). The users of a
 * bucket share its busy time by weight.
 */
export interface SharedUse {
  readonly instanceId: string
  readonly template: string
  /** The bucket's start, epoch ms (a multiple of SHARE_BUCKET_MS). */
  readonly bucket: number
  readonly userId: string
  /** The user's groups when the row was first written (config `cost.groups`). */
  readonly groups: readonly string[]
  readonly weight: number
  readonly ms: number
}

/** Shares are kept per this much time: rows grow with users × instances × buckets, never with reports. */
export const SHARE_BUCKET_MS = 5 * 60_000
