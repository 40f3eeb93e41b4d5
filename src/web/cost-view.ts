/**
 * The dashboard's cost panels (docs/cost.md): a user's own spend this month and the budgets that
 * cover them (with a warning when one is near or over), and for admins everyone's spend by user,
 * group, template and requester, idle cost apart, and every budget. Small tables, no JavaScript.
 */
import type { BudgetStatus } from '../cost/budgets.js'
import type { UsageLine, UsageReport } from '../cost/usage.js'
import { esc } from './html.js'

const money = (n: number, currency: string) => `${n.toFixed(2)} ${esc(currency)}`
const STATE_TEXT = { ok: 'within budget', warning: 'near its limit', exceeded: 'exceeded' } as const

function budgetRows(budgets: readonly BudgetStatus[], currency: string, withName: boolean): string {
  if (budgets.length === 0) return '<p>No budget applies.</p>'
  const rows = budgets
    .map((b) => {
      const hard = b.budget.mode === 'hard' ? 'hard: new sessions refused when exceeded' : 'soft: a warning only'
      const stop =
        b.budget.stopGraceMs !== null
          ? `; running sessions stopped ${Math.round(b.budget.stopGraceMs / 60_000)} min after`
          : ''
      return (
        `<tr class="budget-${b.state}" data-budget="${esc(b.budget.label)}" data-state="${b.state}"><td>${esc(b.budget.label)}</td>` +
        (withName ? `<td>${esc(b.budget.scope)} ${esc(b.key)}</td>` : '') +
        `<td class="num">${money(b.spend, currency)}</td><td class="num">${money(b.budget.amount, currency)}</td>` +
        `<td><span class="state">${STATE_TEXT[b.state]}</span></td><td>${esc(hard + stop)}</td></tr>`
      )
    })
    .join('')
  return (
    `<div class="table-wrap"><table><thead><tr><th>Budget</th>${withName ? '<th>For</th>' : ''}<th class="num">Spent</th><th class="num">Amount</th><th>State</th><th>Kind</th></tr></thead>` +
    `<tbody>${rows}</tbody></table></div>`
  )
}

function alerts(budgets: readonly BudgetStatus[], currency: string): string {
  return budgets
    .filter((b) => b.state !== 'ok')
    .map((b) => {
      const what =
        b.state === 'exceeded'
          ? b.budget.mode === 'hard'
            ? 'is exceeded: no new sessions can be started until the period ends.'
            : 'is exceeded.'
          : 'is near its limit.'
      return `<p class="notice${b.state === 'exceeded' ? ' error' : ''}" role="status">Budget “${esc(b.budget.label)}” ${what} Spent ${money(b.spend, currency)} of ${money(b.budget.amount, currency)}.</p>`
    })
    .join('')
}

function lines(title: string, ls: readonly UsageLine[], currency: string): string {
  if (ls.length === 0) return ''
  const rows = ls
    .slice(0, 50)
    .map(
      (l) =>
        `<tr><td>${esc(l.key)}</td><td class="num">${l.hours.toFixed(2)}</td><td class="num">${money(l.cost, currency)}</td></tr>`,
    )
    .join('')
  return `<div class="table-wrap"><table><caption>${esc(title)}</caption><thead><tr><th>${esc(title)}</th><th class="num">Hours</th><th class="num">Cost</th></tr></thead><tbody>${rows}</tbody></table></div>`
}

/** The user's panel: their spend this period and their budgets. */
export function renderUserSpend(r: UsageReport, budgets: readonly BudgetStatus[]): string {
  return (
    `<section aria-labelledby="h-spend"><h2 id="h-spend">My spending this month</h2>${alerts(budgets, r.currency)}` +
    `<p>Spent since ${esc(new Date(r.from).toISOString().slice(0, 10))}: <strong class="js-spend">${money(r.total, r.currency)}</strong></p>` +
    `${budgetRows(budgets, r.currency, false)}</section>`
  )
}

/** The admin panel: everyone's spend, idle apart, and every budget. */
export function renderAdminCost(r: UsageReport, budgets: readonly BudgetStatus[]): string {
  const byTemplate = r.byTemplate.length
    ? `<div class="table-wrap"><table><caption>Template</caption><thead><tr><th>Template</th><th class="num">Hours</th><th class="num">Cost</th><th class="num">Of which idle</th></tr></thead><tbody>` +
      r.byTemplate
        .map(
          (t) =>
            `<tr><td>${esc(t.key)}</td><td class="num">${t.hours.toFixed(2)}</td><td class="num">${money(t.cost, r.currency)}</td><td class="num">${money(t.idle, r.currency)}</td></tr>`,
        )
        .join('') +
      '</tbody></table></div>'
    : ''
  return (
    `${alerts(budgets, r.currency)}<p>Since ${esc(new Date(r.from).toISOString().slice(0, 10))}: <strong>${money(r.total, r.currency)}</strong>, ` +
    `of which idle (free instances) <strong>${money(r.idle, r.currency)}</strong>.</p>` +
    budgetRows(budgets, r.currency, true) +
    byTemplate +
    lines('User', r.byUser, r.currency) +
    lines('Group', r.byGroup, r.currency) +
    lines('Requester', r.byRequester, r.currency)
  )
}
