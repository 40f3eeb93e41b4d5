import pino from 'pino'
import { loadConfig } from '../../src/config/load.js'
import type { Config } from '../../src/config/types.js'
import { RouteHub } from '../../src/gateway/route-hub.js'
import type { BackoffOptions } from '../../src/pool/create-breaker.js'
import { PoolService, type FaultHooks } from '../../src/pool/pool-service.js'
import { Worker } from '../../src/pool/worker.js'
import { FakeProvider } from '../../src/providers/fake/index.js'
import type { Store } from '../../src/store/store.js'

/** An HTTP server every fake instance "runs": answers the readiness probe. */
export { startAppStub as appServer } from '../api/helpers.js'

export interface Harness {
  readonly config: Config
  readonly store: Store
  readonly provider: FakeProvider
  readonly pool: PoolService
  readonly worker: Worker
  readonly hub: RouteHub
  close(): Promise<void>
}

/** A pool over a real store and the fake provider, as main.ts composes it (without HTTP). */
export function makeHarness(
  store: Store,
  yaml: string,
  opts: {
    appUrl: string
    faults?: FaultHooks
    provider?: FakeProvider
    now?: () => number
    backoff?: Partial<BackoffOptions>
    /** false: the pool reads the store's queue on every check (another process writes to it). */
    watchQueue?: boolean
  },
): Harness {
  const config = loadConfig({ text: yaml, env: {}, cwd: '/tmp' })
  const provider = opts.provider ?? new FakeProvider({ poolId: config.pool.id, settings: { address: opts.appUrl } })
  const providers = new Map([['fake', provider]])
  const log = pino({ level: 'silent' })
  const hub = new RouteHub()
  // Backoff after failed creates in milliseconds, not seconds, unless a test sets it: the engine's
  // tests assert what happens after a failure, not how long the pool waits.
  const backoff = opts.backoff ?? { baseMs: 5, maxMs: 50 }
  const pool = new PoolService({
    config,
    store,
    providers,
    routes: hub,
    log,
    faults: opts.faults,
    now: opts.now,
    backoff,
  })
  // As one process on its store runs (replica-steps.ts): its own requests are every queued row.
  if (opts.watchQueue !== false) pool.watchQueue(() => true)
  const worker = new Worker({ config, store, pool, providers, log, now: opts.now })
  return {
    config,
    store,
    provider,
    pool,
    worker,
    hub,
    /** Stops the worker and the pool, and closes the store (its connections must not pile up across tests). */
    async close() {
      await worker.stop()
      await pool.close()
      await store.close()
    },
  }
}

/** One worker cycle, the pool's background work, and the cycle that sees its results (cost tests' clock steps). */
export async function settle(h: Pick<Harness, 'worker' | 'pool'>): Promise<void> {
  await h.worker.runOnce()
  await h.pool.drain()
  await h.worker.runOnce()
}
