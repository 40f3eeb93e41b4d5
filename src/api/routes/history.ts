import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ValidationError } from '../../domain/errors.js'
import type { Assignment, EndReason } from '../../domain/instance.js'
import { requireRole, roleOf, type ApiDeps } from '../context.js'
import { assignmentView } from '../views.js'
import { parseTime, Q, QInt, QStr, QTime } from './query.js'

const csvCell = (v: unknown) => {
  const s = v === null || v === undefined ? '' : String(v)
  // Quote, and defuse spreadsheet formulas (=, +, -, @ at the start).
  const safe = /^[=+\-@]/.test(s) ? `'${s}` : s
  return /[",\n\r]/.test(safe) || safe !== s ? `"${safe.replace(/"/g, '""')}"` : safe
}

/** The history as CSV (the REST API's `format=csv`; the dashboard's export streams the same). */
export function historyCsv(rows: readonly Assignment[]): string {
  const cols = [
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
  const views = rows.map(assignmentView)
  return [cols.join(','), ...views.map((v) => cols.map((c) => csvCell(v[c])).join(','))].join('\r\n') + '\r\n'
}

const HistoryQuery = Q({
  userId: QStr('user'),
  template: QStr('template'),
  instanceId: QStr('instance'),
  from: QTime('from'),
  to: QTime('to'),
  reason: QStr('end reason'),
  limit: QInt('page size (default 100, at most 10000)'),
  offset: QInt('offset'),
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
        summary: 'Assignment history: who had what, from when to when, why it ended, what it cost',
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
      let rows = await deps.store.listHistory({
        userId: q.userId,
        template: q.template,
        instanceId: q.instanceId,
        from: parseTime(q.from, '/querystring/from'),
        to: parseTime(q.to, '/querystring/to'),
        // Not checked against the reasons: an unknown one matches no row.
        endReason: q.reason as EndReason | undefined,
        limit: Math.min(Number(q.limit ?? 100), 10_000),
        offset: Number(q.offset ?? 0),
      })
      if (role === 'requester' && principal.kind === 'key') rows = rows.filter((r) => r.keyName === principal.name)
      if (q.format === 'csv') {
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', 'attachment; filename="studiopool-history.csv"')
          .send(historyCsv(rows))
      }
      return { history: rows.map(assignmentView) }
    },
  )

  app.get(
    '/api/v1/usage',
    {
      schema: {
        tags: ['history'],
        summary: 'Hours and cost per template and user over a period (admin)',
        querystring: Q({ from: QTime('from'), to: QTime('to') }),
      },
    },
    async (req) => {
      requireRole(req.principal!)
      const now = Date.now()
      const from = parseTime(req.query.from, '/querystring/from') ?? now - 30 * 86_400_000
      const to = parseTime(req.query.to, '/querystring/to') ?? now
      const rows = await deps.store.listHistory({ from, to, limit: 100_000 })
      return usageReport(deps, rows, from, to, now)
    },
  )

  app.get(
    '/api/v1/audit',
    {
      schema: {
        tags: ['history'],
        summary: 'Lifecycle events (admin)',
        querystring: Q({ instanceId: QStr('instance'), limit: QInt('at most (default 200)') }),
      },
    },
    async (req) => {
      requireRole(req.principal!)
      const events = await deps.store.listAudit({
        instanceId: req.query.instanceId,
        limit: Math.min(Number(req.query.limit ?? 200), 5000),
      })
      return { events: events.map((e) => ({ ...e, at: new Date(e.at).toISOString() })) }
    },
  )
}

/** Hours and cost per template and user, of the assignments overlapping [from, to). */
function usageReport(deps: ApiDeps, rows: readonly Assignment[], from: number, to: number, now: number) {
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
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    usage,
    totalCost: Math.round(usage.reduce((s, u) => s + u.cost, 0) * 100) / 100,
  }
}
