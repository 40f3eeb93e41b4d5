/** A counting semaphore: the per-host limit on concurrent starts (moby#42817: many starts at once slow all of them). */
export class Semaphore {
  readonly #max: number
  #used = 0
  readonly #waiting: (() => void)[] = []
  constructor(max: number) {
    this.#max = max
  }
  get waiting(): number {
    return this.#waiting.length
  }
  get active(): number {
    return this.#used
  }
  /** Resolves with the release function once a slot is free; rejects when `signal` aborts first. */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.#used >= this.#max) {
      await new Promise<void>((resolve, reject) => {
        const wake = (): void => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        }
        const onAbort = (): void => {
          const i = this.#waiting.indexOf(wake)
          if (i >= 0) this.#waiting.splice(i, 1)
          reject(signal!.reason instanceof Error ? signal!.reason : new Error('aborted'))
        }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.#waiting.push(wake)
      })
    } else {
      this.#used++
    }
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.#waiting.shift()
      if (next) next()
      else this.#used--
    }
  }
}
