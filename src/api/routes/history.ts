import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ValidationError } from '../../domain/errors.js'
import type { Assignment, EndReason } from '../../domain/instance.js'
import { Readable } from 'node:stream'
import type { HistoryFilter, Store } from '../../store/store.js'
import { requireRole, roleOf, type ApiDeps } from '../context.js'
import { assignmentView, usageView } from '../views.js'
import { decodeCursor, LISTS, pageLimit, pageOf, pageQuery } from '../paging.js'
import { parseTime, Q, QInt, QStr, QTime } from './query.js'

const csvCell = (v: unknown) => {
  const s = v === null || v === undefined ? '' : String(v)
  // Quote, and defuse spreadsheet formulas (=, +, -, @ at the start).
  const safe = /^[=+\-@]/.test(s) ? `'${s}` : s
  return /[",\n\r]/.test(safe) || safe !== s ? `"${safe.replace(/"/g, '""')}"` : safe
}

const CSV_COLUMNS = [
  'id',
  'instanceId',
  'template',
  'userId',
  'keyName',
  'startedAt',
  'endedAt',
  'durationSeconds',
  'endReason',
  'cost',
] as const

const csvRows = (rows: readonly Assignment[]) =>
  rows.map((r) => {
    const v = assignmentView(r)
    return CSV_COLUMNS.map((c) => csvCell(v[c])).join(',') + '\r\n'
  })

/** The history as CSV (the REST API's `format=csv`, one page). */
export function historyCsv(rows: readonly Assignment[]): string {
  return [CSV_COLUMNS.join(',') + '\r\n', ...csvRows(rows)].join('')
}

/**
 * The whole history under a filter as CSV, read from the store a page at a time (keyset, newest
 * first) while the response is written: the dashboard's export, however many rows there are,
 * without holding them all in memory. A page is read only when the client has taken the last one.
 */
export function historyCsvStream(
  store: Pick<Store, 'listHistory'>,
  filter: Omit<HistoryFilter, 'before' | 'limit' | 'offset'>,
  pageSize = 5_000,
): Readable {
  async function* lines(): AsyncGenerator<string> {
    yield CSV_COLUMNS.join(',') + '\r\n'
    let before: HistoryFilter['before']
    for (;;) {
      const rows = await store.listHistory({ ...filter, before, limit: pageSize })
      if (rows.length > 0) yield csvRows(rows).join('')
      if (rows.length < pageSize) return
      const last = rows[rows.length - 1]!
      before = { startedAt: last.startedAt, id: last.id }
    }
  }
  return Readable.from(lines(), { objectMode: false })
}

const HistoryQuery = Q({
  userId: QStr('user'),
  template: QStr('template'),
  instanceId: QStr('instance'),
  from: QTime('from'),
  to: QTime('to'),
  reason: QStr('end reason'),
  ...pageQuery(LISTS.history),
  offset: QInt('skip this many rows (older clients; use cursor, which is stable while rows are added)'),
  format: QStr('json (default) or csv', '^(json|csv)$'),
})

/** Assignment history, usage and cost, and the audit log. */
export async function historyRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()

  app.get(
    '/api/v1/history',
    {
      schema: {
        tags: ['history'],
        summary:
          'Assignment history, newest first, in pages: who had what, from when to when, why it ended, what it cost',
        querystring: HistoryQuery,
      },
    },
    async (req, reply) => {
      const q = req.query
      const principal = req.principal!
      const role = roleOf(principal)
      if (role === 'requester' && !q.userId)
        throw new ValidationError('requester keys must name a userId', [
          { path: '/querystring/userId', message: 'required' },
        ])
      if (role === 'proxy') requireRole(principal)
      if (q.cursor !== undefined && q.offset !== undefined)
        throw new ValidationError('cursor and offset cannot be combined', [
          { path: '/querystring/offset', message: 'leave it out when paging with cursor' },
        ])
      const filter = {
        userId: q.userId,
        template: q.template,
        instanceId: q.instanceId,
        from: parseTime(q.from, '/querystring/from'),
        to: parseTime(q.to, '/querystring/to'),
        // Not checked against the reasons: an unknown one matches no row.
        endReason: q.reason as EndReason | undefined,
        // A requester sees the assignments it requested (in the query, so that pages and totals agree).
        keyName: role === 'requester' && principal.kind === 'key' ? principal.name : undefined,
      }
      const limit = pageLimit(LISTS.history, q.limit)
      const after = decodeCursor(LISTS.history, filter, q.cursor)
      const [rows, total] = await Promise.all([
        deps.store.listHistory({
          ...filter,
          before: after ? { startedAt: Number(after[0]), id: Number(after[1]) } : undefined,
          limit: limit + 1,
          offset: q.offset === undefined ? undefined : Number(q.offset),
        }),
        deps.store.countHistory(filter),
      ])
      const page = pageOf(req, reply, LISTS.history, { rows, limit, total }, filter, (r) => [r.startedAt, r.id])
      if (q.format === 'csv') {
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', 'attachment; filename="studiopool-history.csv"')
          .header('x-total-count', String(page.total))
          .send(historyCsv(page.rows))
      }
      return { history: page.rows.map(assignmentView), nextCursor: page.nextCursor, total: page.total }
    },
  )

  usageRoute(app, deps)
  auditRoute(app, deps)
}

/** GET /api/v1/audit (admin): lifecycle events, newest first, in pages. */
function auditRoute(scope: FastifyInstance, deps: ApiDeps): void {
  scope.withTypeProvider<TypeBoxTypeProvider>().get(
    '/api/v1/audit',
    {
      schema: {
        tags: ['history'],
        summary: 'Lifecycle events, newest first, in pages (admin)',
        querystring: Q({ instanceId: QStr('instance'), ...pageQuery(LISTS.audit) }),
      },
    },
    async (req, reply) => {
      requireRole(req.principal!)
      const filter = { instanceId: req.query.instanceId }
      const limit = pageLimit(LISTS.audit, req.query.limit)
      const after = decodeCursor(LISTS.audit, filter, req.query.cursor)
      const [rows, total] = await Promise.all([
        deps.store.listAudit({ ...filter, beforeId: after ? Number(after[0]) : undefined, limit: limit + 1 }),
        deps.store.countAudit(filter),
      ])
      const page = pageOf(req, reply, LISTS.audit, { rows, limit, total }, filter, (e) => [e.id])
      return {
        events: page.rows.map((e) => ({ ...e, at: new Date(e.at).toISOString() })),
        nextCursor: page.nextCursor,
        total: page.total,
      }
    },
  )
}

/** GET /api/v1/usage (docs/cost.md): the cost report from the cost segments, the budgets, and the older assignment report. */
function usageRoute(scope: FastifyInstance, deps: ApiDeps): void {
  scope.withTypeProvider<TypeBoxTypeProvider>().get(
    '/api/v1/usage',
    {
      schema: {
        tags: ['history'],
        summary:
          'Cost by user, group, template and requester, idle cost apart, spot and on-demand, with every budget (admin; docs/cost.md)',
        querystring: Q({
          from: QTime('from (default: 30 days ago)'),
          to: QTime('to (default: now)'),
          userId: QStr('only this user'),
        }),
      },
    },
    async (req) => {
      requireRole(req.principal!)
      const now = Date.now()
      const from = parseTime(req.query.from, '/querystring/from') ?? now - 30 * 86_400_000
      const to = parseTime(req.query.to, '/querystring/to') ?? now
      if (to < from)
        throw new ValidationError('to is before from', [{ path: '/querystring/to', message: 'before from' }])
      const rows = await allHistory(deps, { from, to, userId: req.query.userId })
      const cost = await deps.pool.cost.usage(from, to, { userId: req.query.userId })
      return { ...usageView(cost), ...legacyUsage(deps, rows, from, to, now) }
    },
  )
}

/** Every assignment of the filter, read in keyset pages (the report used to stop silently at 100,000 rows). */
async function allHistory(deps: ApiDeps, filter: HistoryFilter): Promise<Assignment[]> {
  const all: Assignment[] = []
  for (;;) {
    const last = all[all.length - 1]
    const page = await deps.store.listHistory({
      ...filter,
      before: last ? { startedAt: last.startedAt, id: last.id } : undefined,
      limit: USAGE_PAGE,
    })
    all.push(...page)
    if (page.length < USAGE_PAGE) return all
  }
}
const USAGE_PAGE = 10_000

/** The older report kept beside the new one: assigned hours and cost per template and user, from the history. */
function legacyUsage(deps: ApiDeps, rows: readonly Assignment[], from: number, to: number, now: number) {
  const prices = new Map(deps.config.templates.map((t) => [t.name, t.pricePerHour]))
  const agg = new Map<string, { template: string; userId: string; sessions: number; hours: number; cost: number }>()
  for (const r of rows) {
    const start = Math.max(r.startedAt, from)
    const end = Math.min(r.endedAt ?? now, to)
    const hours = Math.max(0, end - start) / 3_600_000
    const k = `${r.template}\u0000${r.userId}`
    const a = agg.get(k) ?? { template: r.template, userId: r.userId, sessions: 0, hours: 0, cost: 0 }
    a.sessions++
    a.hours += hours
    a.cost += hours * (prices.get(r.template) ?? 0)
    agg.set(k, a)
  }
  const usage = [...agg.values()].map((a) => ({
    ...a,
    hours: Math.round(a.hours * 1000) / 1000,
    cost: Math.round(a.cost * 100) / 100,
  }))
  return {
    usage,
    totalCost: Math.round(usage.reduce((s, u) => s + u.cost, 0) * 100) / 100,
  }
}
