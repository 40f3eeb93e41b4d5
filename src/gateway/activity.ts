import type { Logger } from 'pino'
import type { ActivitySink } from '../domain/routes.js'
import type { GatewayMetrics } from './metrics.js'
import { errSummary } from './proxy-errors.js'

/**
 * Activity, batched: the last time per instance is kept in memory (`touch`, one map write, no
 * I/O), and written once per instance per interval (`flush`, also on close). A failed write is
 * kept and retried with the next batch, never lost and never older than what came since.
 */
export class ActivityBatcher {
  #pending = new Map<string, number>()
  #flushing: Promise<void> = Promise.resolve()
  #timer: NodeJS.Timeout | null = null
  /** When the oldest activity not yet written happened (for the write-lag metric). */
  #oldest: number | undefined

  constructor(
    readonly sink: ActivitySink,
    readonly metrics: Pick<GatewayMetrics, 'activityWrite'>,
    readonly log: Logger,
  ) {}

  /** The instance was used now. */
  touch(id: string): void {
    const now = Date.now()
    this.#pending.set(id, now)
    this.#oldest ??= now
  }

  /** Instances touched since the last write. */
  get pending(): number {
    return this.#pending.size
  }

  /** Flushes every `intervalMs` (at least 100 ms) until `stop`. */
  start(intervalMs: number): void {
    this.stop()
    this.#timer = setInterval(() => void this.flush(), Math.max(100, intervalMs))
    this.#timer.unref()
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = null
  }

  /** Writes pending activity now (after any write under way). */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#write())
    return this.#flushing
  }

  async #write(): Promise<void> {
    if (this.#pending.size === 0) return
    const batch = this.#pending
    const oldest = this.#oldest
    this.#pending = new Map()
    this.#oldest = undefined
    const entries = [...batch].map(([id, at]) => ({ id, at }))
    try {
      await this.sink.recordActivity(entries)
      this.metrics.activityWrite('ok', entries.length, oldest === undefined ? undefined : (Date.now() - oldest) / 1000)
    } catch (err) {
      this.metrics.activityWrite('error', entries.length)
      this.log.warn({ err: errSummary(err), entries: entries.length }, 'activity write failed; will retry')
      for (const [id, at] of batch) if ((this.#pending.get(id) ?? 0) < at) this.#pending.set(id, at)
      if (oldest !== undefined && (this.#oldest === undefined || oldest < this.#oldest)) this.#oldest = oldest
    }
  }
}
