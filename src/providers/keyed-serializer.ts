/**
 * Runs operations on one key (an instance id) one after the other, within this process: a create
 * and a destroy of the same instance never interleave. Keys with nothing queued are forgotten.
 */
export class KeyedSerializer {
  readonly #tails = new Map<string, Promise<unknown>>()

  /** An operation on `key` is under way or queued. */
  has(key: string): boolean {
    return this.#tails.has(key)
  }

  /** Runs `fn` once every earlier operation on `key` has settled (whether it failed or not). */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve()
    const result = prev.then(fn, fn)
    const tail = result.catch(() => {})
    this.#tails.set(key, tail)
    try {
      return await result
    } finally {
      if (this.#tails.get(key) === tail) this.#tails.delete(key)
    }
  }
}
