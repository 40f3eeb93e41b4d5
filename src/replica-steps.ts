import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { Keyring } from './api/keyring.js'
import { checkReadiness, type ReplicaStatus } from './api/readiness.js'
import type { Config } from './config/types.js'
import type { RouteHub } from './gateway/route-hub.js'
import type { Listener } from './listener.js'
import type { Metrics } from './metrics.js'
import type { PoolService } from './pool/pool-service.js'
import { StoreRouteSync, type VerifiedRoutes } from './pool/store-route-sync.js'
import { Worker } from './pool/worker.js'
import { createProbeHandler } from './probes.js'
import type { Provider } from './providers/provider.js'
import type { Cleanups } from './start-steps.js'
import type { Store } from './store/store.js'

// Steps of `start` (src/main.ts) for the worker and the route follower: what several replicas need (docs/ha.md).

export interface WorkerParts {
  readonly config: Config
  readonly role: 'all' | 'api' | 'gateway' | 'worker'
  readonly store: Store
  readonly pool: PoolService
  readonly providers: Map<string, Provider>
  readonly hub: RouteHub
  readonly log: Logger
  readonly metrics: Metrics
  /** What the pool publishes through, so the follower can re-read what it published (store-route-sync.ts). */
  readonly poolRoutes?: VerifiedRoutes
}

/**
 * The worker (roles all and worker, unless disabled), and the route follower for every replica
 * with a gateway: changes made by another process (the leader's worker, another replica's API)
 * reach this one's route table by LISTEN/NOTIFY on Postgres. Role `all` on SQLite needs none (one
 * process); role `api` without notifications polls the store every second.
 */
export function buildWorkerAndRouteSync(
  p: WorkerParts,
  cleanups: Cleanups,
): { worker: Worker | null; sync: StoreRouteSync | null } {
  let worker: Worker | null = null
  if ((p.role === 'all' || p.role === 'worker') && p.config.worker.enabled) {
    const { config, store, pool, providers, metrics } = p
    // Started by `start` once the API and the gateway are up: its first cycle's top-ups (a large
    // minFree) must not compete with the API's plugins loading.
    worker = new Worker({ config, store, pool, providers, log: p.log.child({ component: 'worker' }), metrics })
    const w = worker
    cleanups.push(() => w.stop())
  }
  if (p.role === 'worker') return { worker, sync: null }
  const sync = new StoreRouteSync(p.store, p.pool, p.hub, p.log.child({ component: 'route-sync' }), {
    resyncMs: p.config.ha.routeResyncMs,
    metrics: p.metrics,
  })
  if (!sync.start({ pollWithoutNotify: p.role === 'api' })) {
    // One process on SQLite: its own requests are every queued row there is.
    if (p.role === 'all') p.pool.watchQueue(() => true)
    return { worker, sync: null }
  }
  // Other processes' queued rows arrive as notifications while the listener is connected.
  p.pool.watchQueue(() => sync.status().mode === 'notify')
  if (p.poolRoutes) p.poolRoutes.follower = sync
  cleanups.push(() => sync.stop())
  return { worker, sync }
}

/** /readyz's `replica`: leadership and route-table lag. */
export function replicaStatus(worker: Worker | null, sync: StoreRouteSync | null): () => ReplicaStatus {
  return () => {
    const l = worker?.leadership()
    return {
      worker: l
        ? { leading: l.leading, epoch: l.epoch ?? null, leadingSinceMs: l.since === undefined ? null : l.since }
        : null,
      routes: sync ? sync.status() : null,
    }
  }
}

/** The worker role's /healthz, /readyz and /metrics (metrics for admin and proxy keys). */
export function workerProbes(p: {
  config: Config
  store: Store
  pool: PoolService
  worker: Worker | null
  listener: Listener
  metrics: Metrics
  replica: () => ReplicaStatus
}): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { config, store, pool, worker } = p
  const keys = new Keyring(store, config.auth.keys)
  return createProbeHandler({
    readiness: () =>
      checkReadiness({
        store,
        templates: config.templates.map((t) => ({ name: t.name, unavailable: pool.unavailableReason(t.name) })),
        draining: () => p.listener.lifecycle.draining(),
        extra: { worker: () => (worker ? undefined : 'worker.enabled is false') },
        replica: p.replica,
      }),
    metrics: p.metrics.registry,
    mayReadMetrics: async (key) => {
      if (config.auth.mode === 'none') return true
      if (key === undefined) return false
      const principal = await keys.authenticate({ authorization: `Bearer ${key}` }).catch(() => undefined)
      return principal?.kind === 'key' && principal.role !== 'requester'
    },
  })
}
