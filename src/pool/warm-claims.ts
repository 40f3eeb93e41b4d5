import type { Store, WarmClaimInput, WarmClaimResult } from '../store/store.js'

interface ClaimJob {
  readonly claim: WarmClaimInput
  readonly resolve: (r: WarmClaimResult) => void
  readonly reject: (e: unknown) => void
}

/**
 * The warm claim, as the pool calls it (one function, so the store may take its batching over).
 *
 * On SQLite, warm claims that arrive in the same turn of the event loop share one transaction
 * (group commit): writes serialize on its one connection anyway, and under load the commit, not
 * the claim, is most of a warm hit's cost. Each claim still checks for the user's live instance
 * first, inside the transaction, so a user's two requests in one batch get one instance. If the
 * batch fails, each claim runs again on its own and gets its own error. On Postgres each claim
 * is one statement and they run at once on the pool's connections (SKIP LOCKED keeps them
 * apart): a batch would serialize their round trips.
 */
export function createWarmClaimer(
  store: Store,
  now: () => number,
  background: (p: Promise<unknown>) => void,
): (claim: WarmClaimInput) => Promise<WarmClaimResult> {
  const claims: ClaimJob[] = []
  const flush = async (): Promise<void> => {
    const batch = claims.splice(0)
    try {
      const results = await store.assignWarm(
        batch.map((j) => j.claim),
        now(),
      )
      batch.forEach((job, i) => job.resolve(results[i]!))
    } catch (err) {
      if (batch.length === 1) return batch[0]!.reject(err)
      for (const job of batch) {
        try {
          job.resolve((await store.assignWarm([job.claim], now()))[0]!)
        } catch (e) {
          job.reject(e)
        }
      }
    }
  }
  return async (claim) => {
    if (store.dialect !== 'sqlite') return (await store.assignWarm([claim], now()))[0]!
    return new Promise((resolve, reject) => {
      claims.push({ claim, resolve, reject })
      if (claims.length === 1) setImmediate(() => background(flush()))
    })
  }
}
