/**
 * Whether this process can tell, without reading the store, that no request is queued (issue 10:
 * the pool looked at the queue after every change of a free instance, a store read per warm hit
 * at minFree). The store stays the truth: the hint says "empty" only after a read of the store
 * found it so, and only while every new queued row reaches this process — its own requests (each
 * reported after its transaction commits) and, from other processes, the route follower's
 * notifications (Postgres LISTEN/NOTIFY, while the listener is connected; a reconnect reports a
 * change). On SQLite's one process (role all) its own requests are all there are. Anywhere else
 * (no follower, a polling one, a lost listener, a fresh start) the store is read as before.
 */
export class QueueHint {
  /** Bumped by every change: a read that began before one does not say "empty". */
  #gen = 0
  #empty = false
  #watching: () => boolean = () => false

  /** Every queued row another process writes reaches `changed()` while `watching()` is true. */
  watch(watching: () => boolean): void {
    this.#watching = watching
  }

  /** True when the queue is known to be empty: no read needed. */
  knownEmpty(): boolean {
    return this.#empty && this.#watching()
  }

  /** Before a read of the queue; pass the mark to `saw` with what it found. */
  mark(): number {
    return this.#gen
  }

  saw(mark: number, empty: boolean): void {
    if (mark === this.#gen) this.#empty = empty && this.#watching()
  }

  /** A queued row may exist that the last read did not see; true when the hint had said "empty". */
  changed(): boolean {
    const was = this.#empty
    this.#gen++
    this.#empty = false
    return was
  }
}
