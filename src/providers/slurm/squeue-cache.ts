import type { SlurmJob } from './slurm-cli.js'

export interface Snapshot {
  readonly at: number
  /** Jobs of this pool (by name), by job id. */
  readonly jobs: Map<string, SlurmJob>
}

/**
 * The newest squeue answer, shared by every caller younger than their `maxAgeMs`; else one new query
 * shared by all. Its age counts from when the answer arrived, so a controller slower than the poll
 * interval is not asked again at once. A query started before an invalidation (a suspend, a cancel)
 * is neither joined nor kept afterwards: it may predate the change.
 */
export class SqueueCache {
  #snapshot: Snapshot | null = null
  #inflight: { gen: number; p: Promise<Snapshot> } | null = null
  #gen = 0

  constructor(
    readonly squeue: () => Promise<readonly SlurmJob[]>,
    readonly ours: (job: SlurmJob) => boolean,
  ) {}

  query(maxAgeMs: number): Promise<Snapshot> {
    const snap = this.#snapshot
    if (snap && Date.now() - snap.at < maxAgeMs) return Promise.resolve(snap)
    if (this.#inflight?.gen === this.#gen) return this.#inflight.p
    const gen = this.#gen
    const p = this.squeue()
      .then((all) => {
        const jobs = new Map<string, SlurmJob>()
        for (const j of all) if (this.ours(j)) jobs.set(j.id, j)
        const next = { at: Date.now(), jobs }
        if (gen === this.#gen) this.#snapshot = next
        return next
      })
      .finally(() => {
        if (this.#inflight?.p === p) this.#inflight = null
      })
    this.#inflight = { gen, p }
    return p
  }

  invalidate(): void {
    this.#snapshot = null
    this.#gen++
  }
}
