/**
 * Writes cost accrual (src/cost/accrual.ts) to the store: once per worker cycle, every instance
 * that runs or has an open segment, and every instance that ended since the last pass, gets the
 * segments that cover its running time. Each instance's step is planned and written in one
 * transaction from what the store holds (the steps of up to STEP_BATCH instances share one), so a
 * crash between two steps, a restart or a second pass over the same instant writes nothing twice
 * (docs/cost.md "Cost accrual").
 */
import type { Logger } from 'pino'
import type { Config, TemplateConfig } from '../config/types.js'
import { isAccrued, plan, type CostSegment } from '../cost/accrual.js'
import { rateFor, templateMarket, type Market, type PriceBook } from '../cost/prices.js'
import { ACTIVE_STATES, ENDED_STATES, type Assignment, type Instance } from '../domain/instance.js'
import type { Store, StoreTx } from '../store/store.js'

/** Instances whose steps share one transaction and one read per table (see #batch). */
const STEP_BATCH = 50

/** What one instance's step reads (inside its transaction). */
interface StepRead {
  readonly inst: Instance | undefined
  readonly open: CostSegment | undefined
  readonly lastEnd: number | null
  readonly assignments: readonly Assignment[]
}

/** Ended instances are looked at again this long after the last pass (a pass that failed, clock skew). */
const ENDED_MARGIN_MS = 10 * 60_000

export interface AccrualDeps {
  readonly config: Config
  readonly store: Store
  readonly log: Logger
  readonly prices: PriceBook
  readonly groupsOf: (userId: string) => readonly string[]
}

/** The price book of a configuration: the parsed table and the rates (live spot prices are added by the caller). */
export function priceBookOf(config: Config, liveSpot?: PriceBook['liveSpot']): PriceBook {
  return {
    table: new Map(Object.entries(config.cost.table)),
    rates: config.cost.rates,
    ...(liveSpot ? { liveSpot } : {}),
  }
}

export class CostAccrual {
  readonly #d: AccrualDeps
  readonly #templates: Map<string, TemplateConfig>
  /** The last pass's start: instances that ended after it (less a margin) are looked at. */
  #lastPass: number | null = null

  constructor(deps: AccrualDeps) {
    this.#d = deps
    this.#templates = new Map(deps.config.templates.map((t) => [t.name, t]))
  }

  /** The price per hour of one instance of the template on the market now. */
  price(template: string, market: Market): number {
    const t = this.#templates.get(template)
    return t ? rateFor(t, market, this.#d.prices).perHour : 0
  }

  market(template: string): Market {
    const t = this.#templates.get(template)
    return t ? templateMarket(t) : 'on-demand'
  }

  /**
   * One pass; returns how many instances got new segments. `active` (the worker cycle's list, read
   * at its start) saves reading every active instance again, in one statement that held SQLite's
   * one thread 17-20 ms at 6,000 instances. It only picks which instances to look at: each step
   * reads its instance again in its transaction, and one that changed since the list is seen by
   * the next pass (its segments come from the row's times and the history, not from when it is seen).
   */
  async sync(now: number, active?: readonly Instance[]): Promise<number> {
    const { store } = this.#d
    const [listed, open] = await Promise.all([
      active ?? store.listInstances({ states: ACTIVE_STATES }),
      store.listCostSegments({ open: true }),
    ])
    const since = this.#lastPass === null ? now - this.#d.config.worker.retainEndedMs : this.#lastPass - ENDED_MARGIN_MS
    const ended = await store.listInstances({ states: ENDED_STATES, endedSince: since })
    this.#lastPass = now
    const openBy = new Map(open.map((s) => [s.instanceId, s]))
    const ids = new Set<string>([...listed.map((i) => i.id), ...openBy.keys()])
    const byId = new Map([...listed, ...ended].map((i) => [i.id, i]))
    for (const i of ended) ids.add(i.id)
    // An ended instance with no open segment whose running time is already covered: its step
    // would write nothing (isAccrued, plan()'s own test), so it is not read again. Before, every
    // instance ended in the last ENDED_MARGIN_MS was read again in every pass.
    const settled = ended.filter((i) => !openBy.has(i.id))
    if (settled.length) {
      const ends = await store.lastCostEnds(settled.map((i) => i.id))
      for (const i of settled) {
        if (isAccrued(i, ends.get(i.id) ?? null, i.endedAt ?? now)) ids.delete(i.id)
      }
    }
    const todo = [...ids].filter((id) => {
      const inst = byId.get(id)
      return !(inst && this.#steady(inst, openBy.get(id)))
    })
    let changed = 0
    for (let i = 0; i < todo.length; i += STEP_BATCH) changed += await this.#batch(todo.slice(i, i + STEP_BATCH), now)
    return changed
  }

  /**
   * The steps of several instances in one transaction, read with one statement per table for them
   * all (the per-instance step read the instance, its open segment, its last end and its
   * assignments: four statements and a commit for each new or claimed instance). When the batch
   * fails, each instance's step runs on its own, so that one instance's failure holds back no other.
   */
  async #batch(ids: readonly string[], now: number): Promise<number> {
    try {
      return await this.#d.store.transaction(async (tx) => {
        const insts = new Map((await tx.getInstances(ids)).map((i) => [i.id, i]))
        const open = new Map<string, CostSegment>()
        // Oldest first, as the step's own read: the first open segment of each instance.
        for (const s of await tx.listCostSegments({ instanceIds: ids, open: true }))
          if (!open.has(s.instanceId)) open.set(s.instanceId, s)
        const ends = await tx.lastCostEnds(ids)
        const history = new Map<string, Assignment[]>()
        for (const a of await tx.listHistory({ instanceIds: ids })) {
          const list = history.get(a.instanceId) ?? []
          if (!list.length) history.set(a.instanceId, list)
          list.push(a)
        }
        let changed = 0
        for (const id of ids) {
          const read = { inst: insts.get(id), open: open.get(id), lastEnd: ends.get(id) ?? null }
          if (await this.#write(tx, id, { ...read, assignments: history.get(id) ?? [] }, now)) changed++
        }
        return changed
      })
    } catch {
      let changed = 0
      for (const id of ids) {
        try {
          if (await this.#step(id, now)) changed++
        } catch (err) {
          this.#d.log.warn(
            { instanceId: id, err: (err as Error).message },
            'cost accrual failed for an instance; retried next cycle',
          )
        }
      }
      return changed
    }
  }

  /** A running instance whose open segment still says who it is for, at today's price: nothing to write. */
  #steady(inst: Instance, open: CostSegment | undefined): boolean {
    if (!open || !(['provisioning', 'starting', 'ready', 'stopping'] as string[]).includes(inst.state)) return false
    const who = inst.ownerId
      ? open.kind === 'assigned' &&
        open.userId === inst.ownerId &&
        open.keyName === inst.keyName &&
        (inst.assignedAt ?? 0) <= open.startedAt
      : open.kind === 'idle'
    const market = inst.tags['market'] ?? this.market(inst.template)
    return who && open.market === market && open.ratePerHour === this.price(inst.template, open.market)
  }

  /** Plans and writes one instance's step in one transaction; true when something was written. */
  #step(id: string, now: number): Promise<boolean> {
    return this.#d.store.transaction(async (tx) => {
      const inst = await tx.getInstance(id)
      const [open] = await tx.listCostSegments({ instanceId: id, open: true })
      if (!inst) return this.#write(tx, id, { inst, open, lastEnd: null, assignments: [] }, now)
      const lastEnd = await tx.lastCostEnd(id)
      const assignments = await tx.listHistory({ instanceId: id })
      return this.#write(tx, id, { inst, open, lastEnd, assignments }, now)
    })
  }

  /** One instance's step from what was read of it in the transaction `tx`; true when something was written. */
  async #write(tx: StoreTx, id: string, r: StepRead, now: number): Promise<boolean> {
    const { inst, open } = r
    if (!inst) {
      // The row was purged while a segment was open: close it at its last known time.
      if (open) await tx.writeCost({ close: { id: open.id, endedAt: Math.max(open.startedAt, now) }, insert: [] })
      return Boolean(open)
    }
    const p = plan({
      instance: inst,
      open,
      lastEnd: r.lastEnd,
      assignments: r.assignments,
      price: (m) => this.price(inst.template, m),
      market: this.market(inst.template),
      currency: this.#d.config.cost.currency,
      groupsOf: this.#d.groupsOf,
      now,
    })
    if (!p.close && !p.drop && p.insert.length === 0) return false
    return tx.writeCost(p)
  }
}
