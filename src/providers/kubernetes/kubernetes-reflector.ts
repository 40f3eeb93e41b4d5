import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { toKubeError, type KubernetesObject, type ListResult, type WatchHandler } from './kubernetes-client.js'

/** What happened to one cached object; `lost` is a deletion found by a re-list, not by a watch event. */
export type ReflectorChange = 'added' | 'modified' | 'deleted'

export interface ReflectorOptions<T extends KubernetesObject> {
  readonly name: string
  readonly list: (signal: AbortSignal) => Promise<ListResult<T>>
  readonly watch: (query: Record<string, string>, onEvent: WatchHandler, signal: AbortSignal) => Promise<unknown>
  /** Selectors sent with every watch (the list applies its own). */
  readonly query: Readonly<Record<string, string>>
  readonly watchTimeoutMs: number
  readonly retryBackoffMs: number
  readonly maxRetryBackoffMs: number
  readonly log: Logger
  readonly onChange?: (change: ReflectorChange, obj: T) => void
}

export interface ReflectorStats {
  lists: number
  watches: number
  /** Watches that ended with 410 Gone (history compacted): a re-list followed. */
  expired: number
  bookmarks: number
  events: number
  failures: number
}

/**
 * A reflector (client-go's, KubeSpawner's): list, then watch from the list's resourceVersion with
 * bookmarks; a watch that ends is renewed from the last resourceVersion seen (an event's or a
 * bookmark's); `410 Gone` (an ERROR event or the HTTP status) re-lists, and the re-list's
 * difference with the cache is applied as deletions, so none is missed and none is doubled. A
 * failure is retried with backoff, and the cache is kept meanwhile: an API server that does not
 * answer leaves the last known state, it does not empty it.
 */
export class Reflector<T extends KubernetesObject> {
  readonly #o: ReflectorOptions<T>
  readonly #items = new Map<string, T>()
  readonly #stop = new AbortController()
  readonly stats: ReflectorStats = { lists: 0, watches: 0, expired: 0, bookmarks: 0, events: 0, failures: 0 }
  #rv = ''
  #synced = false
  #loop: Promise<void> | undefined
  #waiters: (() => void)[] = []
  /** Epoch ms of the last answer from the API server; null before the first. */
  lastContactAt: number | null = null
  /** The last failure, while failing; null once the API answers again. */
  lastError: string | null = null

  constructor(o: ReflectorOptions<T>) {
    this.#o = o
  }

  get synced(): boolean {
    return this.#synced
  }

  get resourceVersion(): string {
    return this.#rv
  }

  start(): void {
    this.#loop ??= this.#run()
  }

  async stop(): Promise<void> {
    this.#stop.abort()
    await this.#loop
  }

  /** Resolves once the first list has landed; false after `timeoutMs` without one. */
  async waitSynced(timeoutMs: number): Promise<boolean> {
    if (this.#synced) return true
    let timer: NodeJS.Timeout | undefined
    const ok = await Promise.race([
      new Promise<boolean>((r) => this.#waiters.push(() => r(true))),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs))),
    ])
    clearTimeout(timer)
    return ok
  }

  get(name: string): T | undefined {
    return this.#items.get(name)
  }

  values(): T[] {
    return [...this.#items.values()]
  }

  /** An object this process just wrote (a create's answer): cached now, not a watch event later. */
  observe(obj: T): void {
    const name = obj.metadata?.name
    if (!name) return
    const cur = this.#items.get(name)
    if (cur && cur.metadata?.uid === obj.metadata?.uid && newer(cur, obj)) return
    this.#set(obj)
  }

  async #run(): Promise<void> {
    let backoff = this.#o.retryBackoffMs
    const signal = this.#stop.signal
    while (!signal.aborted) {
      try {
        if (!this.#rv) await this.#relist(signal)
        const began = Date.now()
        const end = await this.#watchOnce(signal)
        if (signal.aborted) return
        if (end === 'expired') {
          this.stats.expired++
          this.#rv = ''
          continue
        }
        if (end !== null) throw end
        // A watch the server ends at once, again and again, is not renewed in a tight loop.
        if (Date.now() - began < 1000) await sleep(this.#o.retryBackoffMs, undefined, { signal }).catch(() => {})
        else backoff = this.#o.retryBackoffMs
      } catch (err) {
        if (signal.aborted) return
        this.stats.failures++
        const e = toKubeError(err, `${this.#o.name} watch`)
        if (e.status === 410) {
          this.stats.expired++
          this.#rv = ''
          continue
        }
        this.lastError = e.message
        this.#o.log.warn(
          { err: e.message, retryInMs: backoff },
          `kubernetes: ${this.#o.name} list/watch failed; cache kept`,
        )
        await sleep(backoff, undefined, { signal }).catch(() => {})
        backoff = Math.min(backoff * 2, this.#o.maxRetryBackoffMs)
      }
    }
  }

  async #relist(signal: AbortSignal): Promise<void> {
    const list = await this.#o.list(signal)
    this.stats.lists++
    this.#contact()
    const fresh = new Set<string>()
    for (const obj of list.items) {
      const name = obj.metadata?.name
      if (!name) continue
      fresh.add(name)
      this.#set(obj)
    }
    for (const [name, obj] of this.#items) {
      if (fresh.has(name)) continue
      this.#items.delete(name)
      this.#o.onChange?.('deleted', obj)
    }
    this.#rv = list.resourceVersion
    if (!this.#synced) {
      this.#synced = true
      for (const w of this.#waiters.splice(0)) w()
    }
  }

  /** One watch: null when it ended normally, 'expired' on 410, else the error. */
  async #watchOnce(signal: AbortSignal): Promise<null | 'expired' | unknown> {
    let expired = false
    const ctl = new AbortController()
    const stop = () => ctl.abort()
    signal.addEventListener('abort', stop, { once: true })
    this.stats.watches++
    const query = {
      ...this.#o.query,
      resourceVersion: this.#rv,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(Math.round(this.#o.watchTimeoutMs / 1000)),
    }
    const end = await this.#o.watch(
      query,
      (type, obj) => {
        this.#contact()
        switch (type) {
          case 'ERROR':
            if ((obj as { code?: number }).code === 410) expired = true
            ctl.abort()
            return
          case 'BOOKMARK':
            this.stats.bookmarks++
            break
          case 'ADDED':
          case 'MODIFIED':
            this.stats.events++
            this.#set(obj as T)
            break
          case 'DELETED': {
            this.stats.events++
            const name = obj.metadata?.name ?? ''
            const cur = this.#items.get(name)
            // Only the object of that uid: a newer one of the same name (made since) stays.
            if (cur && cur.metadata?.uid === obj.metadata?.uid) {
              this.#items.delete(name)
              this.#o.onChange?.('deleted', obj as T)
            }
            break
          }
          default:
            return
        }
        if (obj.metadata?.resourceVersion) this.#rv = obj.metadata.resourceVersion
      },
      ctl.signal,
    )
    signal.removeEventListener('abort', stop)
    if (expired) return 'expired'
    if (ctl.signal.aborted) return null
    return end
  }

  #set(obj: T): void {
    const name = obj.metadata!.name!
    const had = this.#items.has(name)
    this.#items.set(name, obj)
    this.#o.onChange?.(had ? 'modified' : 'added', obj)
  }

  #contact(): void {
    this.lastContactAt = Date.now()
    this.lastError = null
  }
}

/** `a` is at least as recent as `b` (resourceVersions compared as numbers where both are). */
function newer(a: KubernetesObject, b: KubernetesObject): boolean {
  const x = Number(a.metadata?.resourceVersion)
  const y = Number(b.metadata?.resourceVersion)
  return Number.isFinite(x) && Number.isFinite(y) && x >= y
}
