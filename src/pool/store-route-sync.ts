import type { Logger } from 'pino'
import { LIVE_STATES, type Instance } from '../domain/instance.js'
import type { Store } from '../store/store.js'
import { queuePositions, type PoolService, type RoutePublisher } from './pool-service.js'

/**
 * For API replicas that do not run the worker: the worker's changes (ready, replaced, culled) happen in
 * another process, so this follows the store and publishes what changed. One indexed query a second.
 */
export class StoreRouteSync {
  readonly #seen = new Map<string, string>()
  #timer: NodeJS.Timeout | undefined
  #busy = false

  constructor(
    readonly store: Store,
    readonly pool: PoolService,
    readonly routes: RoutePublisher,
    readonly log: Logger,
    readonly intervalMs = 1000,
  ) {}

  start(): void {
    this.#timer = setInterval(() => void this.syncOnce(), this.intervalMs)
    this.#timer.unref()
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer)
  }

  async syncOnce(): Promise<void> {
    if (this.#busy) return
    this.#busy = true
    try {
      const live = await this.store.listInstances({ states: LIVE_STATES })
      const now = new Set<string>()
      const queuedPos = queuePositions(live)
      for (const inst of live) {
        now.add(inst.id)
        const sig = signature(inst, queuedPos.get(inst.id) ?? null)
        if (this.#seen.get(inst.id) !== sig) {
          this.#seen.set(inst.id, sig)
          this.routes.upsert(this.pool.routeEntry(inst, queuedPos.get(inst.id) ?? null))
        }
      }
      for (const id of this.#seen.keys()) {
        if (!now.has(id)) {
          this.#seen.delete(id)
          this.routes.remove(id, 'ended')
        }
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'route sync from the store failed')
    } finally {
      this.#busy = false
    }
  }
}

function signature(i: Instance, pos: number | null): string {
  return `${i.state}|${i.generation}|${i.ownerId}|${i.address}|${i.progress}|${i.progressMessage}|${pos}`
}
