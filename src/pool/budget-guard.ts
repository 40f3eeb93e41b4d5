/**
 * Budgets, enforced (docs/cost.md "Budgets"): the spend of every budget from the cost segments,
 * refreshed each worker cycle (and by a request when older than one cycle), extrapolated between
 * refreshes from the open segments' prices. A hard budget refuses new sessions (403
 * BUDGET_EXCEEDED); with `stopRunning` the sessions it covers are stopped a grace after it was
 * first seen exceeded, and meanwhile `stopAt` tells the warning widget when. Warnings and
 * exceedings are an audit event, a log line and a call of every subscriber, once per budget, key
 * and period (marks in the store's meta table, so a restart does not repeat them).
 */
import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { Config } from '../config/types.js'
import type { CostSegment } from '../cost/accrual.js'
import { SHARE_BUCKET_MS, type SharedUse } from '../cost/shares.js'
import {
  budgetStatuses,
  hardRefusal,
  periodAt,
  refusalMessage,
  statusesFor,
  type BudgetStatus,
  type Subject,
} from '../cost/budgets.js'
import { AppError } from '../domain/errors.js'
import type { EndReason, Instance } from '../domain/instance.js'
import type { SharedGateSnapshot } from '../domain/shared.js'
import type { Store } from '../store/store.js'

/** What subscribers get (webhooks, notifications). */
export interface BudgetEvent {
  readonly type: 'budget.warning' | 'budget.exceeded' | 'budget.stop-scheduled' | 'budget.stopped'
  readonly at: number
  readonly budget: {
    readonly id: string
    readonly label: string
    readonly scope: string
    readonly mode: string
    readonly amount: number
  }
  readonly key: string
  readonly spend: number
  readonly currency: string
  /** budget.stop-scheduled / budget.stopped: the instance and when it is (was) stopped. */
  readonly instanceId?: string
  readonly stopAt?: number
}

export type BudgetListener = (e: BudgetEvent) => void

export interface BudgetGuardDeps {
  readonly config: Config
  readonly store: Store
  readonly log: Logger
  readonly now: () => number
  readonly groupsOf: (userId: string) => readonly string[]
  readonly audit: (instanceId: string | null, event: string, detail: Record<string, unknown>) => Promise<void>
  readonly release: (id: string, reason: EndReason, actor: string) => Promise<unknown>
  /** Users' shares of shared instances in buckets starting in [from, to) (shared-usage.ts); none when absent. */
  readonly sharedUses?: (from: number, to: number) => Promise<SharedUse[]>
}

const round = (n: number) => Math.round(n * 10_000) / 10_000

export class BudgetGuard {
  readonly #d: BudgetGuardDeps
  readonly #listeners = new Set<BudgetListener>()
  #segments: readonly CostSegment[] = []
  #uses: readonly SharedUse[] = []
  #refreshedAt = -Infinity
  /** When each (budget, key, period) was first seen exceeded, for stopRunning budgets. */
  readonly #exceededAt = new Map<string, number>()

  constructor(deps: BudgetGuardDeps) {
    this.#d = deps
  }

  get enabled(): boolean {
    return this.#d.config.budgets.length > 0
  }

  subject(inst: Pick<Instance, 'ownerId' | 'keyName' | 'template'>): Subject {
    return {
      userId: inst.ownerId,
      keyName: inst.keyName,
      template: inst.template,
      groups: inst.ownerId ? this.#d.groupsOf(inst.ownerId) : [],
    }
  }

  /** Subscribes to budget events; returns the unsubscribe. A throwing listener is logged, never breaks enforcement. */
  on(listener: BudgetListener): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** Re-reads the segments of every budget's period. */
  async refresh(now: number): Promise<void> {
    if (!this.enabled) return
    // One bucket earlier: a bucket of shares cut by a period's start is split by its segments' time.
    const from = Math.min(...this.#d.config.budgets.map((b) => periodAt(b.period, now).from)) - SHARE_BUCKET_MS
    const [segments, uses] = await Promise.all([
      this.#d.store.listCostSegments({ from, to: now + 1 }),
      this.#d.sharedUses?.(from, now + 1) ?? [],
    ])
    this.#segments = segments
    this.#uses = uses
    this.#refreshedAt = now
  }

  /** Every budget's status at `now` (from the last refresh, the open segments counted up to now). */
  statuses(now = this.#d.now()): BudgetStatus[] {
    return budgetStatuses(this.#d.config.budgets, this.#segments, now, this.#uses)
  }

  /** The statuses that cover a user (their own, their groups', the pool's; templates and requesters they used). */
  statusesForUser(userId: string, now = this.#d.now()): BudgetStatus[] {
    const groups = this.#d.groupsOf(userId)
    return this.statuses(now).filter(
      (s) =>
        (s.budget.scope === 'user' && s.key === userId) ||
        (s.budget.scope === 'group' && groups.includes(s.key)) ||
        s.budget.scope === 'pool',
    )
  }

  /**
   * Throws 403 BUDGET_EXCEEDED when a hard budget covering this new session is exceeded. The
   * message names the budget, the key, the spend and the amount.
   */
  async checkRequest(who: Subject): Promise<void> {
    if (!this.#d.config.budgets.some((b) => b.mode === 'hard')) return
    const now = this.#d.now()
    if (now - this.#refreshedAt >= this.#d.config.worker.intervalMs) await this.refresh(now)
    const s = hardRefusal(this.statuses(now), who)
    if (s) throw new AppError('BUDGET_EXCEEDED', refusalMessage(s, this.#d.config.cost.currency))
  }

  /**
   * The same decision from what is known now, without waiting (a shared template's visitor at the
   * gateway): the refusal's message, or null. A snapshot older than one worker cycle is refreshed in
   * the background for the next visitor.
   */
  refusalNow(who: Subject): string | null {
    if (!this.#d.config.budgets.some((b) => b.mode === 'hard')) return null
    const now = this.#d.now()
    this.#refreshIfStale(now)
    const s = hardRefusal(this.statuses(now), who)
    return s ? refusalMessage(s, this.#d.config.cost.currency) : null
  }

  /** Every hard budget exceeded now, for a split-mode gateway's gate (same snapshot as refusalNow). */
  exceededHard(): SharedGateSnapshot['budgets'] {
    if (!this.#d.config.budgets.some((b) => b.mode === 'hard')) return []
    const now = this.#d.now()
    this.#refreshIfStale(now)
    return this.statuses(now)
      .filter((s) => s.budget.mode === 'hard' && s.state === 'exceeded')
      .map((s) => ({ scope: s.budget.scope, key: s.key, message: refusalMessage(s, this.#d.config.cost.currency) }))
  }

  /** A snapshot older than one worker cycle is refreshed in the background (the next asker sees it). */
  #refreshIfStale(now: number): void {
    if (now - this.#refreshedAt < this.#d.config.worker.intervalMs || this.#refreshing) return
    this.#refreshing = true
    this.refresh(now)
      .catch(() => {}) // the next visitor, or the worker's cycle, tries again
      .finally(() => (this.#refreshing = false))
  }

  #refreshing = false

  /** When (and why) a budget stops this instance, or null: for the warning widget and the dashboard. */
  stopAt(inst: Pick<Instance, 'ownerId' | 'keyName' | 'template'>): { at: number; reason: 'budget' } | null {
    if (!inst.ownerId) return null
    let at: number | null = null
    for (const s of statusesFor(this.statuses(), this.subject(inst))) {
      const since = this.#exceededAt.get(markKey(s))
      if (since === undefined || s.budget.stopGraceMs === null || s.state !== 'exceeded') continue
      const t = since + s.budget.stopGraceMs
      at = at === null ? t : Math.min(at, t)
    }
    return at === null ? null : { at, reason: 'budget' }
  }

  /** The worker's step: refresh, announce warnings, schedule and carry out stops. */
  async cycle(now: number, assigned: () => Promise<readonly Instance[]>): Promise<void> {
    if (!this.enabled) return
    await this.refresh(now)
    const statuses = this.statuses(now)
    for (const s of statuses)
      if (s.state !== 'ok') await this.#announce(s, s.state === 'warning' ? 'budget.warning' : 'budget.exceeded', now)
    const stopping = statuses.filter(
      (s) => s.state === 'exceeded' && s.budget.mode === 'hard' && s.budget.stopGraceMs !== null,
    )
    if (stopping.length === 0) return
    for (const s of stopping) {
      const key = markKey(s)
      if (!this.#exceededAt.has(key))
        this.#exceededAt.set(key, Number(await this.#d.store.setMetaIfAbsent(`budget.exceededAt:${key}`, String(now))))
    }
    for (const inst of await assigned()) await this.#stopIfDue(inst, now)
  }

  async #stopIfDue(inst: Instance, now: number): Promise<void> {
    const due = this.stopAt(inst)
    if (!due) return
    const s = hardRefusal(this.statuses(now), this.subject(inst))!
    if (due.at > now) {
      await this.#announce(s, 'budget.stop-scheduled', now, { instanceId: inst.id, stopAt: due.at })
      return
    }
    await this.#d.release(inst.id, 'budget', 'budget')
    await this.#announce(s, 'budget.stopped', now, { instanceId: inst.id, stopAt: due.at })
  }

  /** Audit, log and notify once per budget, key, period and event (and instance). */
  async #announce(
    s: BudgetStatus,
    type: BudgetEvent['type'],
    now: number,
    extra: { instanceId?: string; stopAt?: number } = {},
  ): Promise<void> {
    const mark = `budget.event:${markKey(s)}:${type}${extra.instanceId ? `:${extra.instanceId}` : ''}`
    // Unique per attempt: a second pass at the same instant (or another replica) must not take it for its own.
    const stamp = `${now}:${randomUUID()}`
    if ((await this.#d.store.setMetaIfAbsent(mark, stamp)) !== stamp) return
    const b = s.budget
    const e: BudgetEvent = {
      type,
      at: now,
      budget: { id: b.id, label: b.label, scope: b.scope, mode: b.mode, amount: b.amount },
      key: s.key,
      spend: round(s.spend),
      currency: this.#d.config.cost.currency,
      ...extra,
    }
    const level = type === 'budget.warning' ? 'info' : 'warn'
    this.#d.log[level](
      { event: type, budget: b.label, scope: b.scope, key: s.key, spend: e.spend, amount: b.amount, ...extra },
      `${type}: ${b.label} (${s.key}) at ${e.spend} of ${b.amount} ${e.currency}`,
    )
    await this.#d.audit(extra.instanceId ?? null, type, {
      budget: b.label,
      scope: b.scope,
      key: s.key,
      spend: e.spend,
      amount: b.amount,
      mode: b.mode,
      ...extra,
    })
    for (const l of this.#listeners) {
      try {
        l(e)
      } catch (err) {
        this.#d.log.warn({ err: (err as Error).message, event: type }, 'a budget event listener failed')
      }
    }
  }
}

/** One budget, key and period; a rolling period counts in buckets of its own length. */
const markKey = (s: BudgetStatus) => {
  const p = s.budget.period
  return `${s.budget.id}:${s.key}:${p.kind === 'rolling' ? `r${Math.floor(s.to / Math.max(1, p.ms))}` : s.from}`
}
