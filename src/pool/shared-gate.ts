/**
 * Schedules and budgets for a shared template's visitors (issue 14; docs/shared-pools.md "Schedules,
 * budgets and cost"): the same refusals as a dedicated template's REQUEST_SESSION — 503
 * OUTSIDE_SCHEDULE outside an `unavailable` schedule, naming the next opening, and 403
 * BUDGET_EXCEEDED under an exceeded hard budget — decided from what the pool knows now.
 */
import type { TemplateConfig } from '../config/types.js'
import type { SharedRefusal } from '../domain/shared.js'
import { outsideScheduleRefusal } from '../schedule/refusal.js'
import type { BudgetGuard } from './budget-guard.js'

export function sharedRefusal(
  t: TemplateConfig,
  budgets: BudgetGuard,
  who: { readonly userId: string; readonly groups: readonly string[] },
  now: number,
): SharedRefusal | null {
  const outside = outsideScheduleRefusal(t.name, t.schedule, now)
  if (outside) return outside
  const refused = budgets.refusalNow({ userId: who.userId, keyName: null, template: t.name, groups: who.groups })
  return refused === null ? null : { status: 403, code: 'BUDGET_EXCEEDED', message: refused }
}
