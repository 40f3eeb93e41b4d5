import type { TemplateConfig } from '../config/types.js'
import { newInstanceId } from '../domain/ids.js'
import type { EndReason, Instance } from '../domain/instance.js'
import {
  mergeLoads,
  planShared,
  TAG_DRAIN_REASON,
  TAG_DRAINING,
  type DrainReason,
  type PlanInstance,
  type SharedLoad,
  type SharedSettings,
} from '../domain/shared.js'
import * as tr from '../domain/transitions.js'
import type { PoolCore } from './pool-core.js'
import { scheduledSharedBounds } from './shared-schedule.js'

/** A gateway report older than this is not believed (the gateway reports every second). */
const LOAD_FRESH_MS = 10_000
const PLAN_STATES = ['provisioning', 'starting', 'ready', 'stopping'] as const

/** What one shared template looks like now, for the admin view and the API. */
export interface SharedStatus {
  readonly template: string
  readonly routing: SharedSettings['routing']
  readonly minInstances: number
  readonly maxInstances: number
  readonly desired: number
  readonly waiting: number
  readonly queued: number
  readonly maxQueueWaitMs: number
  /** Since this server started: instances started for load, drained, ended after draining, recycled. */
  readonly events: {
    readonly started: number
    readonly drained: number
    readonly ended: number
    readonly recycled: number
  }
  readonly instances: readonly {
    readonly id: string
    readonly state: string
    readonly draining: boolean
    readonly connections: number
    readonly requests: number
  }[]
}

/** Effective bounds of a shared template now. */
export interface SharedBounds {
  readonly minInstances: number
  readonly maxInstances: number
}

/**
 * Shared app pools (issue 14, docs/shared-pools.md): the pool's side. The gateway reports each
 * shared template's load (connections per instance, waiting users); this decides from it and
 * the store (domain/shared.ts planShared) how many instances run, starts them, drains the
 * excess (a tag written by the named transition `beginDrain`; the route says `draining`, so the
 * gateway sends no new users there) and ends drained ones. Shared instances are free rows (no
 * owner) of a shared template: no request assigns them (pool-request.ts refuses the template).
 */
export class SharedPools {
  /** template → reporting gateway (`source`, '' in one process) → its latest report. */
  readonly #loads = new Map<string, Map<string, SharedLoad>>()
  readonly #overSince = new Map<string, number | null>()
  readonly #desired = new Map<string, number>()
  readonly #running = new Map<string, Promise<void>>()
  readonly #again = new Set<string>()
  readonly #events = new Map<string, { started: number; drained: number; ended: number; recycled: number }>()

  constructor(
    private readonly c: PoolCore,
    private readonly release: (id: string, reason: EndReason, actor: string | null) => Promise<unknown>,
    /**
     * The effective minInstances/maxInstances of a shared template now. Default: its schedule's
     * (shared-schedule.ts), else the template's own.
     */
    readonly bounds: (t: TemplateConfig, now: number) => SharedBounds = (t, now) =>
      scheduledSharedBounds(t, now, c.sharedLeads.get(t.name) ?? t.startTimeoutMs + c.d.config.worker.intervalMs),
  ) {}

  /** The gateway's report; a template whose load changed is planned again at once (coalesced). */
  reportLoad(loads: readonly SharedLoad[]): void {
    for (const l of loads) {
      if (!this.c.templates.get(l.template)?.shared) continue
      let bySource = this.#loads.get(l.template)
      if (!bySource) this.#loads.set(l.template, (bySource = new Map()))
      bySource.set(l.source ?? '', l)
      this.c.background(this.scale(l.template))
    }
  }

  /** Every shared template (the worker's cycle). */
  async scaleAll(): Promise<void> {
    for (const t of this.c.templates.values()) if (t.shared) await this.scale(t.name)
  }

  /** Plans one template and acts on it. At most one run per template at a time, and one more after it. */
  scale(template: string): Promise<void> {
    const running = this.#running.get(template)
    if (running) {
      this.#again.add(template)
      return running
    }
    const run = (async () => {
      try {
        do {
          this.#again.delete(template)
          await this.#scaleOnce(template)
        } while (this.#again.has(template) && !this.c.closed)
      } finally {
        this.#running.delete(template)
      }
    })()
    this.#running.set(template, run)
    return run
  }

  status(): SharedStatus[] {
    const out: SharedStatus[] = []
    for (const t of this.c.templates.values()) {
      if (!t.shared) continue
      const load = this.#freshLoad(t.name, this.c.now())
      const b = this.bounds(t, this.c.now())
      out.push({
        template: t.name,
        routing: t.shared.routing,
        ...b,
        desired: this.#desired.get(t.name) ?? b.minInstances,
        waiting: load?.waiting ?? 0,
        queued: load?.queued ?? 0,
        maxQueueWaitMs: load?.maxQueueWaitMs ?? 0,
        events: { ...this.#count(t.name) },
        instances: [],
      })
    }
    return out
  }

  /** status() with each template's instances from the store. */
  async statusWithInstances(): Promise<SharedStatus[]> {
    const out: SharedStatus[] = []
    for (const s of this.status()) {
      const rows = await this.c.d.store.listInstances({ template: s.template, states: PLAN_STATES, assigned: false })
      const load = new Map(this.#freshLoad(s.template, this.c.now())?.instances.map((l) => [l.id, l]) ?? [])
      out.push({
        ...s,
        instances: rows.map((r) => ({
          id: r.id,
          state: r.state,
          draining: r.tags[TAG_DRAINING] !== undefined,
          connections: load.get(r.id)?.connections ?? 0,
          requests: load.get(r.id)?.requests ?? 0,
        })),
      })
    }
    return out
  }

  #count(template: string): { started: number; drained: number; ended: number; recycled: number } {
    let e = this.#events.get(template)
    if (!e) this.#events.set(template, (e = { started: 0, drained: 0, ended: 0, recycled: 0 }))
    return e
  }

  /** Every gateway's fresh report for the template, added up (a gateway gone quiet drops out after LOAD_FRESH_MS). */
  #freshLoad(template: string, now: number): SharedLoad | undefined {
    const bySource = this.#loads.get(template)
    if (!bySource) return undefined
    for (const [source, l] of bySource) if (now - l.at > LOAD_FRESH_MS) bySource.delete(source)
    return mergeLoads([...bySource.values()])
  }

  async #scaleOnce(name: string): Promise<void> {
    const { c } = this
    const t = c.templates.get(name)
    if (c.closed || !t?.shared || c.d.unavailable?.has(name)) return
    const now = c.now()
    const rows = await c.d.store.listInstances({ template: name, states: PLAN_STATES, assigned: false })
    const bounds = this.bounds(t, now)
    const plan = planShared({
      now,
      settings: t.shared,
      ...bounds,
      idleTimeoutMs: t.idleTimeoutMs,
      maxLifetimeMs: t.maxLifetimeMs,
      instances: rows.map(planInstance),
      load: this.#freshLoad(name, now),
      overSince: this.#overSince.get(name) ?? null,
    })
    this.#overSince.set(name, plan.overSince)
    this.#desired.set(name, plan.desired)
    const byId = new Map(rows.map((r) => [r.id, r]))
    for (const d of plan.drain) await this.#drain(byId.get(d.id)!, d.reason)
    for (const e of plan.end) await this.#end(byId.get(e.id)!, e.reason)
    if (plan.start > 0) await this.#start(t, plan.start)
    const draining = rows.filter((r) => r.tags[TAG_DRAINING] !== undefined && r.state !== 'stopping').length
    const m = c.d.metrics?.sharedInstances
    m?.set({ template: name, kind: 'wanted' }, plan.desired)
    m?.set({ template: name, kind: 'draining' }, draining + plan.drain.length)
    m?.set({ template: name, kind: 'serving' }, rows.length - draining - plan.end.length)
  }

  async #drain(inst: Instance, reason: DrainReason): Promise<void> {
    const { c } = this
    const next = await c.apply(inst.id, tr.beginDrain(inst, reason, c.now()))
    if (!next) return
    c.d.metrics?.sharedScaleEvents.inc({ template: inst.template, direction: 'drain', reason })
    this.#count(inst.template).drained++
    if (reason === 'recycle') {
      c.d.metrics?.sharedRecycles.inc({ template: inst.template })
      this.#count(inst.template).recycled++
    }
    await c.audit(inst.id, 'shared-drain', null, { reason })
    c.d.log.info({ instanceId: inst.id, template: inst.template, reason }, 'shared instance draining')
    c.routes.publish(next)
  }

  async #end(inst: Instance, reason: DrainReason): Promise<void> {
    const why = (inst.tags[TAG_DRAIN_REASON] as DrainReason | undefined) ?? reason
    this.c.d.metrics?.sharedScaleEvents.inc({ template: inst.template, direction: 'in', reason: why })
    this.#count(inst.template).ended++
    this.c.d.log.info({ instanceId: inst.id, template: inst.template, reason: why }, 'shared instance ends')
    await this.release(inst.id, why === 'recycle' ? 'lifetime' : 'idle', null)
  }

  /** New free rows of the template, within its cap, the pool's and the breaker (inside the pool lock). */
  async #start(t: TemplateConfig, want: number): Promise<void> {
    const { c } = this
    const made = await c.d.store.withPoolLock(async (tx) => {
      const counts = await tx.countActive()
      let count = counts.byTemplate[t.name] ?? 0
      let total = counts.total
      const cap = Math.min(t.maxInstances, this.bounds(t, c.now()).maxInstances)
      const out: Instance[] = []
      let n = c.breaker.state(t.name)?.open ? Math.min(want, 1) : want
      while (n > 0 && count < cap && total < c.d.config.pool.maxInstances) {
        const id = newInstanceId()
        if (!c.breaker.permit(t.name, id)) break
        out.push(await c.insert(tr.newWarm(id, t.name, c.now()), tx))
        n--
        count++
        total++
      }
      return out
    })
    for (const inst of made) {
      c.d.metrics?.sharedScaleEvents.inc({ template: t.name, direction: 'out', reason: 'load' })
      this.#count(t.name).started++
      await c.audit(inst.id, 'shared-start', null, {})
      c.routes.publish(inst)
      c.background(c.lifecycle.provision(inst))
    }
  }
}

function planInstance(r: Instance): PlanInstance {
  const since = r.tags[TAG_DRAINING]
  return {
    id: r.id,
    state: r.state as PlanInstance['state'],
    startedAt: r.startedAt ?? r.createdAt,
    readyAt: r.readyAt,
    lastActivityAt: r.lastActivityAt,
    drainingSince: since !== undefined ? Number(since) : null,
  }
}
