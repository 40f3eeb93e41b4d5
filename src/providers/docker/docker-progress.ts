import type { Logger } from 'pino'
import type { InstanceSpec } from '../provider.js'
import type { PullEvent } from './docker-client.js'

/** One progress report: at most this long (the report is best effort and must never hold a create). */
const REPORT_TIMEOUT_MS = 5_000

/**
 * Launch progress from inside `create` (an image pull, a wait for a start slot), posted to the
 * instance's own progress URL with its token, as the instance itself would (architecture.md: progress
 * is fed by the provider and by the instance). Best effort: a failed report is logged at debug
 * and forgotten. Reports are coalesced: one in flight at a time, and the latest waiting one is
 * sent next, so a fast pull stream never queues hundreds of requests.
 */
export class LaunchProgress {
  readonly #spec: InstanceSpec
  readonly #log: Logger
  #inFlight: Promise<void> | null = null
  #next: { progress: number; message: string } | null = null
  #last = ''

  constructor(spec: InstanceSpec, log: Logger) {
    this.#spec = spec
    this.#log = log
  }

  report(progress: number, message: string): void {
    if (message === this.#last) return
    this.#last = message
    this.#next = { progress, message }
    if (!this.#inFlight) this.#inFlight = this.#drain()
  }

  /** Resolves once every report made so far has been sent (or failed). */
  async flush(): Promise<void> {
    while (this.#inFlight) await this.#inFlight
  }

  async #drain(): Promise<void> {
    while (this.#next) {
      const r = this.#next
      this.#next = null
      await this.#post(r.progress, r.message)
    }
    this.#inFlight = null
  }

  async #post(progress: number, message: string): Promise<void> {
    try {
      const res = await fetch(this.#spec.progressUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.#spec.progressToken}` },
        body: JSON.stringify({ progress, message }),
        signal: AbortSignal.timeout(REPORT_TIMEOUT_MS),
      })
      await res.body?.cancel()
      if (!res.ok) this.#log.debug({ instanceId: this.#spec.id, status: res.status }, 'docker: progress report refused')
    } catch (err) {
      // The token is in a header only, never in what is logged.
      this.#log.debug({ instanceId: this.#spec.id, err: (err as Error).message }, 'docker: progress report failed')
    }
  }
}

/**
 * Layers done / total from Docker's pull stream. A layer is known from its first line with an id
 * (`Pulling fs layer`, `Waiting`, `Already exists`); it is done at `Pull complete` or `Already
 * exists`. Lines about the image as a whole (`Pulling from …`, `Digest: …`) carry the tag as id and
 * no layer status, and are not counted.
 */
export class PullTracker {
  readonly #layers = new Map<string, boolean>()

  /** True when the event changed the counts. */
  add(ev: PullEvent): boolean {
    if (!ev.id || !ev.status) return false
    const status = ev.status.toLowerCase()
    const layerStatus =
      status.startsWith('pulling fs layer') ||
      status.startsWith('waiting') ||
      status.startsWith('downloading') ||
      status.startsWith('verifying') ||
      status.startsWith('download complete') ||
      status.startsWith('extracting') ||
      status.startsWith('pull complete') ||
      status.startsWith('already exists')
    if (!layerStatus) return false
    const done = status.startsWith('pull complete') || status.startsWith('already exists')
    const before = this.#layers.get(ev.id)
    if (before === true || before === done) return false
    this.#layers.set(ev.id, done)
    return true
  }

  get total(): number {
    return this.#layers.size
  }

  get done(): number {
    let n = 0
    for (const d of this.#layers.values()) if (d) n++
    return n
  }
}
