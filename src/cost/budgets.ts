/**
 * Budgets (docs/cost.md "Budgets"): money per user, group, template, requester or the whole pool,
 * per calendar period (UTC) or over the last so long. Pure: spend is summed from cost segments
 * handed in; src/pool/budget-guard.ts reads them, refuses, warns and stops.
 */
import type { CostSegment } from './accrual.js'
import { costPieces, type CostPiece, type PieceKind, type SharedUse } from './shares.js'

export const BUDGET_SCOPES = ['user', 'group', 'template', 'requester', 'pool'] as const
export type BudgetScope = (typeof BUDGET_SCOPES)[number]

export type BudgetPeriod =
  { readonly kind: 'day' | 'week' | 'month' } | { readonly kind: 'rolling'; readonly ms: number }

export interface BudgetSpec {
  /** Stable across restarts (marks in the store are keyed by it). */
  readonly id: string
  readonly label: string
  readonly scope: BudgetScope
  /** The one user, group, template or requester; null: each has its own budget of this amount (always null for `pool`). */
  readonly name: string | null
  readonly amount: number
  readonly currency: string | null
  readonly period: BudgetPeriod
  readonly mode: 'soft' | 'hard'
  /** Fraction of the amount at which the warning comes. */
  readonly warnAt: number
  /** Hard budgets: sessions it covers are stopped this long after it is exceeded; null = never. */
  readonly stopGraceMs: number | null
}

export type BudgetState = 'ok' | 'warning' | 'exceeded'

export interface BudgetStatus {
  readonly budget: BudgetSpec
  /** The user, group, template or requester it is counted for; `pool` for the pool. */
  readonly key: string
  readonly spend: number
  readonly state: BudgetState
  /** The period counted: [from, to). For a rolling period `to` is now. */
  readonly from: number
  readonly to: number
}

/** Whom a session is for: what budgets apply to it. */
export interface Subject {
  readonly userId: string | null
  readonly keyName: string | null
  readonly template: string
  readonly groups: readonly string[]
}

const DAY = 86_400_000

/** The period a budget counts at `now`: calendar periods in UTC (weeks from Monday), or the last `ms`. */
export function periodAt(p: BudgetPeriod, now: number): { from: number; to: number } {
  const d = new Date(now)
  switch (p.kind) {
    case 'day': {
      const from = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate())
      return { from, to: from + DAY }
    }
    case 'week': {
      const today = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate())
      const from = today - ((d.getUTCDay() + 6) % 7) * DAY
      return { from, to: from + 7 * DAY }
    }
    case 'month':
      return {
        from: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1),
        to: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1),
      }
    case 'rolling':
      return { from: now - p.ms, to: now }
  }
}

/**
 * The keys of a piece of cost for a scope: whom it is counted for (none: it does not count there).
 * A user's shared time counts for them and their groups; it has no requester.
 */
export function keysOf(
  scope: BudgetScope,
  s: Pick<CostPiece, 'userId' | 'keyName' | 'template' | 'groups'> & { readonly kind: PieceKind },
): readonly string[] {
  const used = s.kind !== 'idle'
  switch (scope) {
    case 'pool':
      return ['pool']
    case 'template':
      return [s.template]
    case 'user':
      return used && s.userId ? [s.userId] : []
    case 'requester':
      return s.kind === 'assigned' && s.keyName ? [s.keyName] : []
    case 'group':
      return used ? s.groups : []
  }
}

/** The keys a subject (a session, a request) is counted under for a scope. */
export function subjectKeys(scope: BudgetScope, who: Subject): readonly string[] {
  return keysOf(scope, { kind: who.userId ? 'assigned' : 'idle', ...who })
}

function stateOf(b: BudgetSpec, spend: number): BudgetState {
  if (spend >= b.amount) return 'exceeded'
  if (spend >= b.amount * b.warnAt) return 'warning'
  return 'ok'
}

/**
 * Every budget's spend per key at `now`, from the segments overlapping its period (the open ones up
 * to now) and the users' shares of shared instances (shares.ts). A budget for one name reports that
 * name even at zero spend; a budget for each reports only the keys that spent something.
 */
export function budgetStatuses(
  budgets: readonly BudgetSpec[],
  segments: readonly CostSegment[],
  now: number,
  uses: readonly SharedUse[] = [],
): BudgetStatus[] {
  const out: BudgetStatus[] = []
  // Budgets of one period count the same pieces.
  const piecesOf = new Map<string, CostPiece[]>()
  for (const b of budgets) {
    const { from, to } = periodAt(b.period, now)
    const pk = `${from}:${to}`
    let pieces = piecesOf.get(pk)
    if (!pieces) piecesOf.set(pk, (pieces = costPieces(segments, uses, from, to, now)))
    const spend = new Map<string, number>()
    if (b.name !== null) spend.set(b.name, 0)
    if (b.scope === 'pool') spend.set('pool', 0)
    for (const p of pieces) {
      // Idle time handed to users is a negative idle piece: it nets out of template and pool spend.
      if (p.cost === 0) continue
      for (const k of keysOf(b.scope, p))
        if (b.name === null || k === b.name) spend.set(k, (spend.get(k) ?? 0) + p.cost)
    }
    for (const [key, v] of spend)
      out.push({ budget: b, key, spend: v, state: stateOf(b, v), from, to: Math.min(to, Math.max(now, from)) })
  }
  return out
}

/** Whether a budget of this scope, counting `key`, covers the subject (a split-mode gateway asks too). */
export function covers(scope: BudgetScope, key: string, who: Subject): boolean {
  return subjectKeys(scope, who).includes(key)
}

/** The statuses that cover a subject (its user, groups, template, requester and the pool). */
export function statusesFor(statuses: readonly BudgetStatus[], who: Subject): BudgetStatus[] {
  return statuses.filter((s) => covers(s.budget.scope, s.key, who))
}

const money = (n: number, currency: string) => `${n.toFixed(2)} ${currency}`

/** The message of a refusal: which budget, the spend, the amount, until when. */
export function refusalMessage(s: BudgetStatus, currency: string): string {
  const b = s.budget
  const until =
    b.period.kind === 'rolling' ? 'until older spending leaves the window' : `until ${new Date(s.to).toISOString()}`
  return `budget "${b.label}" is exceeded for ${b.scope} "${s.key}": spent ${money(s.spend, currency)} of ${money(b.amount, currency)} since ${new Date(s.from).toISOString()}; no new sessions ${until}`
}

/** The first exceeded hard budget that covers the subject, if any (the refusal of a new session). */
export function hardRefusal(statuses: readonly BudgetStatus[], who: Subject): BudgetStatus | undefined {
  return statusesFor(statuses, who).find((s) => s.budget.mode === 'hard' && s.state === 'exceeded')
}
