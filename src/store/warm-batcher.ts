/** Group commit of warm claims, for both adapters. */
import type { WarmClaimInput, WarmClaimResult } from './store.js'

/** One claim and the time it was made. */
export interface TimedClaim {
  readonly claim: WarmClaimInput
  readonly now: number
}

interface Job extends TimedClaim {
  readonly resolve: (r: WarmClaimResult) => void
  readonly reject: (err: unknown) => void
}

/**
 * Group commit: warm claims that arrive in the same turn of the event loop share one transaction
 * (`run`). Under load the commit and the round trip, not the claim, are most of a warm hit's cost:
 * SQLite serializes writes on its one connection anyway, and on Postgres one statement for a batch
 * is one round trip and one WAL flush instead of one per claim. Batches do not wait for each other:
 * a new one starts in the next turn while the last is in flight (Postgres runs them on separate
 * connections). Each claim still checks for the user's live instance first, so a user's two requests
 * in one batch get one instance. If the batch fails, each claim runs again on its own and gets its
 * own error.
 */
export class WarmClaimBatcher {
  readonly #run: (claims: readonly TimedClaim[]) => Promise<WarmClaimResult[]>
  #jobs: Job[] = []

  constructor(run: (claims: readonly TimedClaim[]) => Promise<WarmClaimResult[]>) {
    this.#run = run
  }

  claim(claim: WarmClaimInput, now: number): Promise<WarmClaimResult> {
    return new Promise((resolve, reject) => {
      this.#jobs.push({ claim, now, resolve, reject })
      if (this.#jobs.length === 1) setImmediate(() => void this.#flush())
    })
  }

  async #flush(): Promise<void> {
    const batch = this.#jobs
    this.#jobs = []
    try {
      const results = await this.#run(batch)
      batch.forEach((job, i) => job.resolve(results[i]!))
    } catch (err) {
      if (batch.length === 1) return batch[0]!.reject(err)
      for (const job of batch) {
        try {
          job.resolve((await this.#run([job]))[0]!)
        } catch (e) {
          job.reject(e)
        }
      }
    }
  }
}
