/**
 * Cost and budgets in the pool (docs/cost.md): accrual (cost-accrual.ts) and budgets
 * (budget-guard.ts) over the store, one worker step, the request check, and the reports the API
 * and the dashboard show. Built by the PoolService; reached as `pool.cost`.
 */
import type { Logger } from 'pino'
import type { Config } from '../config/types.js'
import type { BudgetStatus } from '../cost/budgets.js'
import { costPieces, SHARE_BUCKET_MS } from '../cost/shares.js'
import { usageReport, type UsageReport } from '../cost/usage.js'
import type { SharedLoad } from '../domain/shared.js'
import { LIVE_STATES, type EndReason, type Instance } from '../domain/instance.js'
import type { Store } from '../store/store.js'
import { BudgetGuard, type BudgetListener } from './budget-guard.js'
import { CostAccrual, priceBookOf } from './cost-accrual.js'
import { SharedUsageRecorder } from './shared-usage.js'

export type { BudgetEvent, BudgetListener } from './budget-guard.js'

export interface CostServiceDeps {
  readonly config: Config
  readonly store: Store
  readonly log: Logger
  readonly now: () => number
  readonly audit: (instanceId: string | null, event: string, detail: Record<string, unknown>) => Promise<void>
  readonly release: (id: string, reason: EndReason, actor: string) => Promise<unknown>
}

export class CostService {
  readonly accrual: CostAccrual
  readonly budgets: BudgetGuard
  /** Users' shares of shared instances, from the gateway's reports (shared-usage.ts). */
  readonly shared: SharedUsageRecorder
  readonly #d: CostServiceDeps
  readonly #groups: Map<string, string[]>

  constructor(deps: CostServiceDeps) {
    this.#d = deps
    this.#groups = new Map()
    for (const [group, users] of Object.entries(deps.config.cost.groups))
      for (const u of users) this.#groups.set(u, [...(this.#groups.get(u) ?? []), group])
    const groupsOf = (u: string): readonly string[] => this.#groups.get(u) ?? []
    this.accrual = new CostAccrual({
      config: deps.config,
      store: deps.store,
      log: deps.log,
      prices: priceBookOf(deps.config),
      groupsOf,
    })
    const shared = new Set(deps.config.templates.filter((t) => t.shared).map((t) => t.name))
    this.shared = new SharedUsageRecorder({ ...deps, groupsOf, isShared: (t) => shared.has(t) })
    this.budgets = new BudgetGuard({ ...deps, groupsOf, sharedUses: (from, to) => this.shared.list(from, to) })
  }

  /** The gateway's report of who used shared instances (recorded with its load, every second). */
  recordShared(loads: readonly SharedLoad[]): void {
    this.shared.record(loads)
  }

  groupsOf(userId: string): readonly string[] {
    return this.#groups.get(userId) ?? []
  }

  /**
   * The worker's step: accrue every instance's cost, then check every budget (warn, stop).
   * `active`: the cycle's own list of active instances, read at its start (CostAccrual.sync).
   */
  async cycle(now: number, active?: readonly Instance[]): Promise<void> {
    await this.accrual.sync(now, active)
    await this.budgets.cycle(now, () => this.#d.store.listInstances({ states: LIVE_STATES, assigned: true }))
  }

  /**
   * Before a new session: 403 BUDGET_EXCEEDED when a hard budget covering it is exceeded. The
   * user's live session of the template is not a new one: it is still handed back.
   */
  async checkRequest(input: {
    userId: string
    template: string
    keyName: string | null
    byOwner?: boolean
  }): Promise<void> {
    try {
      await this.budgets.checkRequest({ ...input, groups: this.groupsOf(input.userId) })
    } catch (err) {
      const live = await this.#d.store.findLive(input.userId, input.template)
      if (live && (input.byOwner || live.keyName === input.keyName)) return
      throw err
    }
  }

  /** When a budget will stop this instance (the warning widget's question), or null. */
  budgetStopAt(inst: Pick<Instance, 'ownerId' | 'keyName' | 'template'>): { at: number; reason: 'budget' } | null {
    return this.budgets.stopAt(inst)
  }

  onBudgetEvent(listener: BudgetListener): () => void {
    return this.budgets.on(listener)
  }

  /** Cost by user, group, template and requester, idle cost apart, over [from, to); with the budgets at `now`. */
  async usage(
    from: number,
    to: number,
    opts: { userId?: string } = {},
  ): Promise<UsageReport & { budgets: BudgetStatus[] }> {
    const now = this.#d.now()
    // A bucket of shares cut by the period is split by its segments' time: read them whole.
    const [segments, uses] = await Promise.all([
      this.#d.store.listCostSegments({ from: from - SHARE_BUCKET_MS, to: to + SHARE_BUCKET_MS }),
      this.shared.list(from - SHARE_BUCKET_MS, to),
    ])
    let pieces = costPieces(segments, uses, from, to, now)
    if (opts.userId !== undefined) pieces = pieces.filter((p) => p.kind !== 'idle' && p.userId === opts.userId)
    await this.budgets.refresh(now)
    const budgets =
      opts.userId !== undefined ? this.budgets.statusesForUser(opts.userId, now) : this.budgets.statuses(now)
    return { ...usageReport(pieces, from, to, this.#d.config.cost.currency), budgets }
  }
}
