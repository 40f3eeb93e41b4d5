/**
 * Users' use of shared instances, recorded (issue 14, docs/cost.md "Shared templates"): the
 * gateway's reports (every second, in one process or over `POST /api/v1/gateway/shared-load`) say
 * per instance how long it was busy and each user's weight (seat-ms or requests); each user's
 * weight and part of the busy time are added to their row of the bucket (SHARE_BUCKET_MS) in the
 * store, every FLUSH_MS and before each read. The cost is computed when read (cost/shares.ts).
 * What is not flushed yet is lost with the process (at most FLUSH_MS of shares: that time stays idle).
 */
import type { Logger } from 'pino'
import { bucketOf } from '../cost/shares.js'
import type { SharedUse } from '../domain/cost-segment.js'
import type { SharedLoad } from '../domain/shared.js'
import type { Store } from '../store/store.js'

/** How often the shares gathered in memory are written. */
export const FLUSH_MS = 5_000
/** Rows kept in memory at most while the store refuses them (then the oldest are dropped, and said). */
const MAX_PENDING = 100_000

export interface SharedUsageDeps {
  readonly store: Store
  readonly log: Logger
  readonly now: () => number
  readonly groupsOf: (userId: string) => readonly string[]
  /** Whether a template is `mode: shared`: reports for others are ignored. */
  readonly isShared: (template: string) => boolean
}

type Pending = { -readonly [K in keyof SharedUse]: SharedUse[K] }

export class SharedUsageRecorder {
  readonly #d: SharedUsageDeps
  #pending = new Map<string, Pending>()
  #lastFlush: number
  #flushing: Promise<void> = Promise.resolve()

  constructor(deps: SharedUsageDeps) {
    this.#d = deps
    this.#lastFlush = deps.now()
  }

  /** The gateway's report: each user's ms of each busy instance, into the bucket of the report's time. */
  record(loads: readonly SharedLoad[]): void {
    const now = this.#d.now()
    for (const l of loads) {
      if (!l.shares?.length || !this.#d.isShared(l.template)) continue
      const bucket = bucketOf(Math.min(l.at, now))
      for (const s of l.shares) {
        if (s.busyMs <= 0 || s.users.length === 0) continue
        const total = s.users.reduce((n, u) => n + Math.max(0, u.weight), 0)
        // The busy time goes with the users by weight; users of weight 0 (a long request still in flight) evenly.
        for (const u of s.users) {
          const w = Math.max(0, u.weight)
          this.#add(
            s.id,
            l.template,
            bucket,
            u.userId,
            w,
            total > 0 ? (s.busyMs * w) / total : s.busyMs / s.users.length,
          )
        }
      }
    }
    if (now - this.#lastFlush >= FLUSH_MS) void this.flush()
  }

  #add(instanceId: string, template: string, bucket: number, userId: string, weight: number, ms: number): void {
    const k = `${instanceId}\0${bucket}\0${userId}`
    const p = this.#pending.get(k)
    if (p) {
      p.weight += weight
      p.ms += ms
    } else {
      const groups = [...this.#d.groupsOf(userId)]
      this.#pending.set(k, { instanceId, template, bucket, userId, groups, weight, ms })
    }
  }

  /** Writes what was gathered (one write at a time); on failure it is kept for the next flush. Never throws. */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#write())
    return this.#flushing
  }

  async #write(): Promise<void> {
    this.#lastFlush = this.#d.now()
    if (this.#pending.size === 0) return
    const batch = this.#pending
    this.#pending = new Map()
    try {
      await this.#d.store.sharedUsage.add([...batch.values()])
    } catch (err) {
      for (const [k, p] of batch) {
        const later = this.#pending.get(k)
        if (later) {
          later.weight += p.weight
          later.ms += p.ms
        } else this.#pending.set(k, p)
      }
      let drop = this.#pending.size - MAX_PENDING
      for (const k of this.#pending.keys()) if (drop-- > 0) this.#pending.delete(k)
      this.#d.log.warn({ err: (err as Error).message, rows: this.#pending.size }, 'shared usage not written; retried')
    }
  }

  /** The stored shares of buckets starting in [from, to), after writing what is gathered. */
  async list(from: number, to: number): Promise<SharedUse[]> {
    await this.flush()
    return this.#d.store.sharedUsage.list({ from, to })
  }
}
