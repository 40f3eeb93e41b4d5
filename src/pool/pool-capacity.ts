import type { TemplateConfig } from '../config/types.js'
import { FREE_STATES, type Instance } from '../domain/instance.js'
import { newInstanceId } from '../domain/ids.js'
import * as tr from '../domain/transitions.js'
import type { StoreTx } from '../store/store.js'
import { nextTurn, type PoolCore } from './pool-core.js'

/** Free instances, most advanced first (ready, then starting, then provisioning), oldest first. */
const READINESS: Record<string, number> = { ready: 0, starting: 1, provisioning: 2 }
export const byReadiness = (a: Instance, b: Instance) =>
  READINESS[a.state]! - READINESS[b.state]! || a.createdAt - b.createdAt

/**
 * New free rows one top-up pass inserts per template, at most. The pass holds the pool lock, which
 * on SQLite is the one connection that warm claims need too; a warm pool far below its minFree
 * (a start, a burst of claims) fills over several passes, a turn apart, with claims served between.
 */
const TOP_UP_ROWS_PER_PASS = 25

/**
 * A pass that many callers ask for and one run serves: at most one runs, and a call made while it
 * runs gets one more pass after it (on the next turn), so every caller's await ends after a pass
 * that started after its call, however many called.
 */
class Coalesced {
  #running: Promise<void> | undefined
  #again = false

  constructor(
    private readonly pass: () => Promise<void>,
    private readonly closed: () => boolean,
    /** Awaited once before a run's first pass (the top-up's wait for a lull in warm claims). */
    private readonly before?: () => Promise<void>,
  ) {}

  /** From inside a pass: one more pass after this one. */
  again(): void {
    this.#again = true
  }

  run(): Promise<void> {
    if (this.#running) {
      this.#again = true
      return this.#running
    }
    this.#running = (async () => {
      try {
        if (this.before) await this.before()
        do {
          this.#again = false
          await this.pass()
          if (this.#again) await nextTurn()
        } while (this.#again && !this.closed())
      } finally {
        this.#running = undefined
      }
    })()
    return this.#running
  }
}

/** What one serveQueue pass decided inside the pool lock, published after it commits. */
interface QueuePlan {
  readonly promoted: Instance[]
  readonly handed: { q: Instance; from: Instance }[]
  readonly evicted: Instance[]
}

/** serveQueue's running totals inside the lock. */
interface QueueState {
  readonly free: Map<string, Instance[]>
  readonly byTemplate: Record<string, number>
  total: number
}

/**
 * Capacity and the queue: queued requests served oldest first, warm pools topped up to minFree,
 * within the caps and the create breaker, and what waited out a backoff.
 */
export class Capacity {
  readonly #backoffTimers = new Map<string, NodeJS.Timeout>()
  // A run of top-up passes starts in a lull of warm claims (PoolCore.claimsLull), then runs to the end.
  readonly #topUps = new Coalesced(
    () => this.#topUpOnce(),
    () => this.c.closed,
    () => this.c.claimsLull(),
  )
  readonly #queueServes = new Coalesced(
    () => this.#serveQueueOnce(),
    () => this.c.closed,
  )

  constructor(private readonly c: PoolCore) {}

  get backoffPending(): boolean {
    return this.#backoffTimers.size > 0
  }

  close(): void {
    for (const t of this.#backoffTimers.values()) clearTimeout(t)
    this.#backoffTimers.clear()
  }

  async afterCapacityFreed(): Promise<void> {
    await this.serveQueue()
    await this.topUp()
  }

  /**
   * Serves queued requests, oldest first (issue 9): each takes a free instance of its template
   * when there is one (ready or starting: it is handed over, see below), else a new one while the
   * caps allow and the template's breaker permits a create. New instances are made for the queue
   * only when no free one exists: a free one still being created is waited for (it is handed over
   * as soon as it runs).
   *
   * Handing over: the queued row keeps its instanceId and URL (the user already has them) and takes
   * the free instance's resource, state, address and progress; the free row ends as terminated
   * without touching the resource, and the resource's labels are rewritten (relabel) to name the
   * queued row and its owner. Templates that keep the path prefix (`pathMode: keep`) built their app
   * for the free instance's own base path, and templates with `upstreamHeaders` check an app token
   * derived from the free instance's id, so there the free one is recycled instead (stopped to make
   * room, then the queued request gets a new one).
   */
  serveQueue(): Promise<void> {
    return this.#queueServes.run()
  }

  /** One serveQueue pass. Calls coalesce as topUp's do: every free instance that starts or gets ready calls it. */
  async #serveQueueOnce(): Promise<void> {
    const { c } = this
    if (c.closed) return
    // Cheap check without the lock: a free instance becoming ready calls this every time. None at
    // all when this process knows the queue is empty (queue-hint.ts).
    if (c.queue.knownEmpty()) return
    const mark = c.queue.mark()
    const empty = !(await c.d.store.listQueued(undefined, 1)).length
    c.queue.saw(mark, empty)
    if (empty) return
    const plan: QueuePlan = { promoted: [], handed: [], evicted: [] }
    await c.d.store.withPoolLock(async (tx) => {
      const queued = await tx.listQueued(undefined, 500)
      if (!queued.length) return
      const counts = await tx.countActive()
      const freeRows = await tx.listInstances({ assigned: false, states: FREE_STATES, limit: 1000 })
      freeRows.sort(byReadiness)
      const free = new Map<string, Instance[]>()
      for (const f of freeRows) {
        if (!free.has(f.template)) free.set(f.template, [])
        free.get(f.template)!.push(f)
      }
      const st: QueueState = { free, byTemplate: counts.byTemplate, total: counts.total }
      for (const q of queued) await this.#serveOne(tx, q, st, plan)
    })
    await this.#publishPlan(plan)
  }

  /** One queued request inside the lock: a running free instance, else wait for one being created, else a new one. */
  async #serveOne(tx: StoreTx, q: Instance, st: QueueState, plan: QueuePlan): Promise<void> {
    const { c } = this
    const t = c.templates.get(q.template)
    if (!t) return
    const now = c.now()
    const mine = st.free.get(q.template) ?? []
    // 1. A free instance that runs (ready or starting).
    const i = mine.findIndex((f) => f.state !== 'provisioning' && f.providerRef)
    if (i >= 0) {
      const f = mine.splice(i, 1)[0]!
      // Also recycled: an app that checks the gateway's app token, which is per instance id.
      if (t.pathMode === 'keep' || Object.keys(t.upstreamHeaders ?? {}).length > 0) {
        const v = await c.apply(f.id, tr.evict(f, now), tx)
        if (v) plan.evicted.push(v)
        return
      }
      const moved = await this.#handOver(tx, f, q, now)
      if (moved) plan.handed.push({ q: moved, from: f })
      return
    }
    // 2. One still being created: wait for it rather than create another.
    const creating = mine.findIndex((f) => f.state === 'provisioning')
    if (creating >= 0) {
      mine.splice(creating, 1)
      return
    }
    // 3. A new instance, within the caps and the breaker.
    if (st.total >= c.d.config.pool.maxInstances) return
    if ((st.byTemplate[q.template] ?? 0) >= c.maxOf(t)) return
    if (!c.breaker.permit(q.template, q.id)) return
    const n = await c.apply(q.id, tr.promote(now), tx)
    if (!n) {
      c.breaker.release(q.template, q.id)
      return
    }
    st.byTemplate[q.template] = (st.byTemplate[q.template] ?? 0) + 1
    st.total++
    plan.promoted.push(n)
  }

  async #publishPlan({ promoted, handed, evicted }: QueuePlan): Promise<void> {
    const { c } = this
    for (const { q, from } of handed) {
      c.d.metrics?.assignments.inc({ template: q.template, kind: 'queued' })
      await c.audit(q.id, 'handed-over', null, { from: from.id, state: q.state })
      await c.audit(from.id, 'handed-over', null, { to: q.id })
      c.routes.remove(from.id, 'handed over')
      c.routes.publish(q)
      c.lifecycle.relabelSoon(q)
      if (q.state === 'starting') c.background(c.lifecycle.watchStart(q.id))
    }
    for (const v of evicted) {
      c.routes.remove(v.id, 'evicted')
      c.background(c.lifecycle.destroy(v, 'evicted'))
    }
    for (const inst of promoted) {
      c.d.metrics?.assignments.inc({ template: inst.template, kind: 'queued' })
      await c.audit(inst.id, 'dequeued', null, {})
      c.routes.publish(inst)
      c.background(c.lifecycle.provision(inst))
    }
    const changed = new Set([...promoted, ...handed.map((h) => h.q)].map((p) => p.template))
    for (const t of changed) await c.routes.publishQueue(t)
  }

  /** The queued row `q` takes the free instance `f`'s resource (see serveQueue). Undefined when either changed meanwhile. */
  async #handOver(tx: StoreTx, f: Instance, q: Instance, now: number): Promise<Instance | undefined> {
    const { c } = this
    const gone = await c.apply(f.id, tr.handOff(f, q, now), tx)
    if (!gone) return undefined
    const moved = await c.apply(q.id, tr.takeOver(f, now), tx)
    if (!moved) {
      // Released meanwhile: the free instance stays free.
      await c.apply(f.id, tr.undoHandOff(f, now), tx)
      return undefined
    }
    return moved
  }

  /**
   * Tops each template's free instances up to minFree, within the template's and the pool's caps;
   * queued requests come first. Called after every assignment and release, so calls coalesce: at
   * most one runs, and at most one more follows it (a warm hit never waits on the pool lock for it).
   */
  topUp(): Promise<void> {
    return this.#topUps.run()
  }

  async #topUpOnce(): Promise<void> {
    const { c } = this
    if (c.closed) return
    // Templates backing off after failed creates are skipped: the worker's first cycle after the delay tops them up.
    const wanting = c.d.config.templates.filter(
      (t) => c.minFreeOf(t) > 0 && !t.shared && !c.d.unavailable?.has(t.name) && c.breaker.wouldPermit(t.name),
    )
    // Cheap check without the lock: most calls find every warm pool full.
    const short: TemplateConfig[] = []
    for (const t of wanting) {
      const minFree = c.minFreeOf(t)
      const free = await c.d.store.countInstances({
        template: t.name,
        assigned: false,
        states: FREE_STATES,
        limit: minFree,
      })
      if (free < minFree) short.push(t)
    }
    if (!short.length) return
    const st = { byTemplate: {} as Record<string, number>, total: 0, capped: false }
    const made = await c.d.store.withPoolLock(async (tx) => {
      if ((await tx.listQueued(undefined, 1)).length) return [] // queued requests have the first claim on capacity
      const counts = await tx.countActive()
      Object.assign(st, { byTemplate: counts.byTemplate, total: counts.total })
      const out: Instance[] = []
      for (const t of short) out.push(...(await this.#warm(tx, t, st)))
      return out
    })
    // The rest in the next pass: the pool lock (on SQLite the one connection) is never held for long.
    if (st.capped) this.#topUps.again()
    for (const inst of made) {
      await c.audit(inst.id, 'warm', null, {})
      c.routes.publish(inst)
      c.background(c.lifecycle.provision(inst))
    }
  }

  /** New free rows for one template, up to its minFree, within the caps (inside the pool lock). */
  async #warm(
    tx: StoreTx,
    t: TemplateConfig,
    st: { readonly byTemplate: Record<string, number>; total: number; capped: boolean },
  ): Promise<Instance[]> {
    const { c } = this
    const minFree = c.minFreeOf(t)
    const free = await tx.countInstances({ template: t.name, assigned: false, states: FREE_STATES, limit: minFree })
    let want = minFree - free
    // An open breaker lets one create through, the probe; the rest wait for its outcome.
    if (c.breaker.state(t.name)?.open) want = Math.min(want, 1)
    let count = st.byTemplate[t.name] ?? 0
    const out: Instance[] = []
    if (want > TOP_UP_ROWS_PER_PASS) {
      want = TOP_UP_ROWS_PER_PASS
      st.capped = true
    }
    const cap = c.maxOf(t)
    while (want > 0 && count < cap && st.total < c.d.config.pool.maxInstances) {
      const id = newInstanceId()
      if (!c.breaker.permit(t.name, id)) break
      out.push(await c.insert(tr.newWarm(id, t.name, c.now()), tx))
      want--
      count++
      st.total++
    }
    return out
  }

  /**
   * Once the template's backoff has passed, creates what waited for it (rows left `provisioning`,
   * the queue, the warm pool) without waiting for the worker's next cycle. One timer per template,
   * unref'd, and not tracked by drain(): a five-minute backoff must not hold up a shutdown.
   */
  afterBackoff(template: string): void {
    const { c } = this
    if (c.closed || this.#backoffTimers.has(template)) return
    const at = c.breaker.state(template)?.nextAttemptAt ?? c.now()
    const timer = setTimeout(
      () => {
        this.#backoffTimers.delete(template)
        if (c.closed) return
        c.background(
          (async () => {
            const rows = await c.d.store.listInstances({ template, states: ['provisioning'], limit: 100 })
            for (const r of rows) if (!r.providerRef && !c.busy.has(r.id)) c.background(c.lifecycle.provision(r))
            await this.serveQueue()
            await this.topUp()
          })(),
        )
      },
      Math.max(0, at - c.now()) + 1,
    )
    timer.unref()
    this.#backoffTimers.set(template, timer)
  }
}
