import type { Logger } from 'pino'
import { LIVE_STATES, type Instance } from '../domain/instance.js'
import type { Metrics } from '../metrics.js'
import type { InstanceChange, InstanceWatch, Store } from '../store/store.js'
import { queuePositions, type PoolService, type RoutePublisher } from './pool-service.js'

export interface RouteSyncOptions {
  /** Full resync this often while change notifications do not flow (no LISTEN: SQLite, reconnecting). */
  readonly pollMs?: number
  /** Full resync this often while they do (a safety net). */
  readonly resyncMs?: number
  readonly metrics?: Metrics
  readonly now?: () => number
}

/** What /readyz says about this replica's route table (docs/ha.md). */
export interface RouteSyncStatus {
  /** `notify`: changes arrive by LISTEN/NOTIFY; `poll`: by the full resync only. */
  readonly mode: 'notify' | 'poll'
  /** How long ago the last full resync finished, ms (null: none yet). */
  readonly sinceResyncMs: number | null
  /** How long the last change took from the store to this table, ms (null: none yet). */
  readonly lastDelayMs: number | null
}

/**
 * The route publisher the pool of a following replica writes through: each publish goes to the
 * table, then the follower re-reads that row from the store. A publish of this process's pool can
 * run after a newer change of another replica was already notified and applied (its write
 * committed first, its publish ran later); the re-read, queued behind that notification, puts the
 * newest committed row back.
 */
export class VerifiedRoutes implements RoutePublisher {
  follower: StoreRouteSync | undefined
  constructor(readonly inner: RoutePublisher) {}
  upsert(route: Parameters<RoutePublisher['upsert']>[0]): void {
    this.inner.upsert(route)
    this.follower?.verify(route.instanceId)
  }
  remove(instanceId: string, reason: string): void {
    this.inner.remove(instanceId, reason)
    this.follower?.verify(instanceId)
  }
  reset(routes: Parameters<RoutePublisher['reset']>[0]): void {
    this.inner.reset(routes)
    void this.follower?.syncOnce()
  }
}

/**
 * For replicas whose route table must follow changes another process makes (the leader's worker:
 * ready, replaced, culled; another replica's API: assigned, released): Postgres LISTEN/NOTIFY
 * (0008-ha's trigger) names each changed instance as it commits, and this reads just those rows;
 * a full resync runs on every (re)connect of the listener and every `resyncMs`, and every `pollMs`
 * while there are no notifications. All reads run one at a time, in order, so an older read never
 * overwrites a newer one.
 */
export class StoreRouteSync {
  readonly #seen = new Map<string, string>()
  /**
   * Changed ids: when the first change of the batch happened (null: a re-read after this process's
   * own publish, not a change to measure), and the newest row a notification carried.
   */
  readonly #pending = new Map<string, { changedAt: number | null; row: Instance | undefined; rowKnown: boolean }>()
  readonly #pollMs: number
  readonly #resyncMs: number
  readonly #now: () => number
  #chain: Promise<void> = Promise.resolve()
  #flushQueued = false
  #timer: NodeJS.Timeout | undefined
  #watch: InstanceWatch | undefined
  #lastResync: number | undefined
  #lastRepublish = 0
  #lastDelay: number | null = null
  #stopped = false

  constructor(
    readonly store: Store,
    readonly pool: PoolService,
    readonly routes: RoutePublisher,
    readonly log: Logger,
    readonly opts: RouteSyncOptions = {},
  ) {
    this.#pollMs = opts.pollMs ?? 1000
    this.#resyncMs = opts.resyncMs ?? 10_000
    this.#now = opts.now ?? Date.now
  }

  /**
   * Starts following. Without change notifications (SQLite) it polls when `pollWithoutNotify`,
   * else it does not start at all and returns false (the process's own pool is the only writer).
   */
  start(o: { readonly pollWithoutNotify: boolean } = { pollWithoutNotify: true }): boolean {
    this.#watch = this.store.watchInstances({
      changed: (c) => this.#changed(c),
      resync: () => {
        // Changes may have been missed, queued rows among them.
        this.pool.queueChanged()
        void this.syncOnce()
      },
    })
    if (!this.#watch && !o.pollWithoutNotify) return false
    this.#timer = setInterval(() => {
      const due = this.#watch?.connected() ? this.#resyncMs : this.#pollMs
      if (this.#lastResync === undefined || this.#now() - this.#lastResync >= due - 50) void this.syncOnce()
    }, this.#pollMs)
    this.#timer.unref()
    return true
  }

  async stop(): Promise<void> {
    this.#stopped = true
    if (this.#timer) clearInterval(this.#timer)
    await this.#watch?.close()
    await this.#chain
  }

  status(): RouteSyncStatus {
    return {
      mode: this.#watch?.connected() ? 'notify' : 'poll',
      sinceResyncMs: this.#lastResync === undefined ? null : this.#now() - this.#lastResync,
      lastDelayMs: this.#lastDelay,
    }
  }

  /** A full resync (queued behind reads already running). */
  syncOnce(): Promise<void> {
    return this.#serial(() => this.#full())
  }

  #serial(fn: () => Promise<void>): Promise<void> {
    this.#chain = this.#chain.then(fn).catch((err: unknown) => {
      this.log.warn({ err: (err as Error).message }, 'route sync from the store failed')
    })
    return this.#chain
  }

  /** This process's pool published this route: read the row again, after the notifications queued so far. */
  verify(id: string): void {
    if (this.#stopped || !this.#watch) return
    this.#seen.delete(id)
    const was = this.#pending.get(id)
    this.#pending.set(id, { changedAt: was?.changedAt ?? null, row: undefined, rowKnown: false })
    this.#queueFlush()
  }

  #changed(c: InstanceChange): void {
    if (this.#stopped) return
    // Notifications arrive in commit order: the newest row wins, the oldest time is the delay.
    const was = this.#pending.get(c.id)
    // A pending re-read stays a re-read: the row the notification carried may be older than what it re-reads.
    const reread = was !== undefined && !was.rowKnown
    this.#pending.set(c.id, {
      changedAt: was?.changedAt ?? c.changedAt,
      row: reread ? undefined : c.row,
      rowKnown: !reread && c.row !== undefined,
    })
    this.#queueFlush()
  }

  #queueFlush(): void {
    if (this.#flushQueued) return
    this.#flushQueued = true
    void this.#serial(async () => {
      this.#flushQueued = false
      await this.#flush()
    })
  }

  /** The rows named by notifications since the last flush; a queue change needs every position, so a full resync. */
  async #flush(): Promise<void> {
    const batch = [...this.#pending]
    this.#pending.clear()
    if (batch.length === 0) return
    // Rows the notification carried are used as they are; the others (a delete, a row too large, a
    // re-read after this process's own publish) are read, all in one statement: a warm hit's
    // re-read used to be a round trip of its own, as many as the claims themselves.
    const toRead = batch.filter(([, p]) => !p.rowKnown).map(([id]) => id)
    const read = new Map((toRead.length ? await this.store.getInstances(toRead) : []).map((r) => [r.id, r]))
    const rows = batch.map(([id, p]) => (p.rowKnown ? p.row : read.get(id)))
    if (rows.some((r) => r?.state === 'queued')) this.pool.queueChanged()
    const queueMoved = rows.some((r, i) => r?.state === 'queued' || this.#seen.get(batch[i]![0])?.startsWith('queued|'))
    if (queueMoved) await this.#full()
    else
      rows.forEach((inst, i) => {
        const id = batch[i]![0]
        if (inst && (LIVE_STATES as readonly string[]).includes(inst.state)) this.#publish(inst, null)
        else if (this.#seen.delete(id)) this.routes.remove(id, 'ended')
      })
    const now = this.#now()
    for (const [, { changedAt }] of batch) {
      if (changedAt === null) continue
      const delay = Math.max(0, now - changedAt)
      this.#lastDelay = delay
      this.opts.metrics?.routePropagation.observe(delay / 1000)
    }
  }

  async #full(): Promise<void> {
    const live = await this.store.listInstances({ states: LIVE_STATES })
    const republish = this.#now() - this.#lastRepublish >= this.#resyncMs - 50
    if (republish) this.#lastRepublish = this.#now()
    const now = new Set<string>()
    const queuedPos = queuePositions(live)
    if (queuedPos.size) this.pool.queueChanged()
    for (const inst of live) {
      now.add(inst.id)
      // Every resyncMs, every route, even one this follower already published: this process's own
      // pool may have published an older view of it since (its write committed before the one
      // notified, its publish ran after), and only this can tell (such a route is stale ≤ resyncMs).
      if (republish) this.#seen.delete(inst.id)
      this.#publish(inst, queuedPos.get(inst.id) ?? null)
    }
    for (const id of this.#seen.keys()) {
      if (!now.has(id)) {
        this.#seen.delete(id)
        this.routes.remove(id, 'ended')
      }
    }
    this.#lastResync = this.#now()
  }

  #publish(inst: Instance, pos: number | null): void {
    const sig = signature(inst, pos)
    if (this.#seen.get(inst.id) === sig) return
    this.#seen.set(inst.id, sig)
    this.routes.upsert(this.pool.routeEntry(inst, pos))
  }
}

function signature(i: Instance, pos: number | null): string {
  return `${i.state}|${i.generation}|${i.ownerId}|${i.address}|${i.progress}|${i.progressMessage}|${pos}`
}
