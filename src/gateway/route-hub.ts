import type { RouteEntry, RouteEvent, RouteSource } from '../domain/routes.js'

type Listener = (event: RouteEvent) => void

/**
 * The in-memory publication point for routes. The pool engine pushes into it in-process,
 * the API's gateway feed streams it in split mode, and tests drive it directly.
 *
 * `subscribe` sends a `reset` with the full current state first, then every change, in order.
 * A listener that throws is isolated: the others still get the event.
 */
export class RouteHub implements RouteSource {
  readonly #routes = new Map<string, RouteEntry>()
  readonly #listeners = new Set<Listener>()

  /** Adds or replaces one route. */
  upsert(route: RouteEntry): void {
    this.#routes.set(route.instanceId, route)
    this.#emit({ type: 'upsert', route })
  }

  /** Removes one route; a no-op (no event) when it is unknown. */
  remove(instanceId: string, reason: string): void {
    if (!this.#routes.delete(instanceId)) return
    this.#emit({ type: 'remove', instanceId, reason })
  }

  /** Replaces the whole table (the pool's recovery at start, or a resync). */
  reset(routes: readonly RouteEntry[]): void {
    this.#routes.clear()
    for (const r of routes) this.#routes.set(r.instanceId, r)
    this.#emit({ type: 'reset', routes: [...this.#routes.values()] })
  }

  get(instanceId: string): RouteEntry | undefined {
    return this.#routes.get(instanceId)
  }

  snapshot(): RouteEntry[] {
    return [...this.#routes.values()]
  }

  get size(): number {
    return this.#routes.size
  }

  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener)
    listener({ type: 'reset', routes: this.snapshot() })
    return () => {
      this.#listeners.delete(listener)
    }
  }

  #emit(event: RouteEvent): void {
    for (const l of [...this.#listeners]) {
      try {
        l(event)
      } catch {
        // One broken subscriber must not stop the others (or the pool engine that called us).
      }
    }
  }
}
