import type { Closeable } from './http-exchange.js'

/**
 * The open exchanges (HTTP and WebSocket) per instance, so that a dropped or replaced route
 * closes its connections, and a shutdown says goodbye to all of them.
 */
export class ConnectionTracker {
  readonly #open = new Map<string, Set<Closeable>>()

  track(id: string, c: Closeable): void {
    let set = this.#open.get(id)
    if (!set) this.#open.set(id, (set = new Set()))
    set.add(c)
  }

  untrack(id: string, c: Closeable): void {
    const set = this.#open.get(id)
    if (set && set.delete(c) && set.size === 0) this.#open.delete(id)
  }

  /** How many are open for an instance. */
  count(id: string): number {
    return this.#open.get(id)?.size ?? 0
  }

  /** Closes the instance's connections; returns how many there were. */
  closeInstance(id: string): number {
    const set = this.#open.get(id)
    if (!set) return 0
    this.#open.delete(id)
    for (const c of [...set]) c.close()
    return set.size
  }

  /** Shutting down: WebSockets get close frames, event streams end; others may finish. */
  goAway(): void {
    for (const set of this.#open.values()) for (const c of [...set]) c.goAway?.()
  }

  closeAll(): void {
    for (const set of this.#open.values()) for (const c of [...set]) c.close()
    this.#open.clear()
  }
}
