import type { NonceLedger } from '../domain/routes.js'

/**
 * An in-memory NonceLedger for one process (tests, `dev`, and the split-mode feed fixture).
 * Entries are dropped after they expire, so memory is bounded by the launch rate × TTL.
 * A real deployment uses the store's ledger so that single use holds across gateways and restarts.
 */
export function createMemoryNonceLedger(now: () => number = Date.now): NonceLedger & { readonly size: number } {
  const seen = new Map<string, number>()
  let lastSweep = 0
  return {
    get size() {
      return seen.size
    },
    async consumeOnce(nonce, expiresAt) {
      const t = now()
      if (t - lastSweep > 10_000) {
        lastSweep = t
        for (const [n, e] of seen) if (e <= t) seen.delete(n)
      }
      if (seen.has(nonce)) return false
      seen.set(nonce, expiresAt)
      return true
    },
  }
}
