/**
 * Shares one read among concurrent callers without serving anything older than the call.
 * A caller never joins a query that is already running: it joins the next one, which starts on the
 * next turn of the event loop (setImmediate) once the running one is done, and every caller that
 * arrives before that start shares it. So at most one query runs and one waits, however many
 * clients poll at once (GET_STATUS {} with 10,000 instances costs a few ms of store time, and
 * 50 pollers would otherwise queue 50 of them), and a client that just changed something always
 * sees its change. The setImmediate matters for SQLite, whose driver runs a query synchronously:
 * without it the first request's query would finish before the next request is even parsed.
 */
export class Coalescer<T> {
  readonly #fn: () => Promise<T>
  #running: Promise<T> | null = null
  #pending: Promise<T> | null = null

  constructor(fn: () => Promise<T>) {
    this.#fn = fn
  }

  get(): Promise<T> {
    if (this.#pending) return this.#pending
    const previous = this.#running
    const p = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => previous?.then(noop, noop))
      .then(() => {
        this.#pending = null
        const q = this.#fn()
        this.#running = q
        const clear = () => {
          if (this.#running === q) this.#running = null
        }
        q.then(clear, clear)
        return q
      })
    this.#pending = p
    return p
  }
}

const noop = () => {}

/** One coalescer per owner object (a store) and name, created on first use. */
export function coalescerFor<T>(owner: object, name: string, fn: () => Promise<T>): Coalescer<T> {
  let byName = registry.get(owner)
  if (!byName) registry.set(owner, (byName = new Map()))
  let c = byName.get(name) as Coalescer<T> | undefined
  if (!c) byName.set(name, (c = new Coalescer(fn)))
  return c
}
const registry = new WeakMap<object, Map<string, Coalescer<unknown>>>()

/**
 * A response body serialized once and sent as it is to every caller that shares it
 * (the command handler sends `bytes` with content-type application/json).
 */
export class RawJson {
  /** UTF-8 bytes, encoded once (a 10,000-id list is ~250 kB: encoding it per response shows in profiles). */
  readonly bytes: Buffer
  constructor(value: unknown) {
    this.bytes = Buffer.from(JSON.stringify(value))
  }
  /** Anything that serializes it the ordinary way gets the same JSON. */
  toJSON(): unknown {
    return JSON.parse(this.bytes.toString('utf8'))
  }
}
