import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { historyCsvStream } from '../../api/routes/history.js'
import { isAppError } from '../../domain/errors.js'
import { isInstanceId, isKeyId, isKeyName } from '../../domain/ids.js'
import { LIVE_STATES, type Instance } from '../../domain/instance.js'
import { KEY_ROLES, type KeyRole } from '../../domain/keys.js'
import type { HistoryFilter } from '../../store/store.js'
import { renderAdminView, type HistoryFilters } from '../admin-view.js'
import { renderAdminCost } from '../cost-view.js'
import { stateChart } from '../chart.js'
import { forecastSection } from '../forecast-section.js'
import { formOf, type DashboardContext } from '../context.js'
import type { Guards } from '../guards.js'
import { messagePage } from '../html.js'

const DAY_MS = 86_400_000
const HISTORY_PAGE = 200
const DATE_RE = /^\d{4}-\d{2}-\d{2}$/
/** `suspend` keeps the disk (resume brings it back); `delete` ends the session — the API's `stop`. */
const ACTIONS = ['suspend', 'resume', 'restart', 'delete'] as const
const DONE = { delete: 'deleted', restart: 'restarted', suspend: 'suspended', resume: 'resumed' } as const

const ADMIN_NOTICES: Record<string, string> = {
  deleted: 'The instance was deleted and its session ended.',
  restarted: 'The instance is restarting under the same address.',
  suspended: 'The instance was suspended; its disk is kept. Resume brings it back under the same address.',
  resumed: 'The instance is resuming.',
  revoked: 'The key was revoked.',
}

/** The admin page's query: history filters and a notice; a value is used when it is one string. */
const AdminQuery = Type.Object({
  user: Type.Optional(Type.Unknown()),
  template: Type.Optional(Type.Unknown()),
  from: Type.Optional(Type.Unknown()),
  to: Type.Optional(Type.Unknown()),
  done: Type.Optional(Type.Unknown()),
})
type Query = Record<string, unknown>

interface PageExtra {
  readonly status?: number
  readonly notice?: { text: string; error?: boolean }
  readonly createdKey?: { name: string; role: KeyRole; secret: string }
}

/** The administrators' view: the pool, instances and their actions, history (and CSV), API keys. */
export const adminRoutes: FastifyPluginAsyncTypebox<{ ctx: DashboardContext; guard: Guards }> = async (
  app,
  { ctx, guard },
) => {
  const { deps } = ctx
  const notFound = (req: FastifyRequest, reply: FastifyReply, title: string, text: string) =>
    ctx.html(reply, 404, messagePage(title, text, { viewer: ctx.viewerOf(req) }))

  app.get('/admin', { schema: { hide: true, querystring: AdminQuery }, preHandler: guard.adminPage }, (req, reply) =>
    adminPage(ctx, req, reply, req.query),
  )

  // The same CSV as GET /api/v1/history?format=csv, authorized by the admin's cookie instead of a key.
  app.get(
    '/admin/history.csv',
    { schema: { hide: true, querystring: AdminQuery }, preHandler: guard.adminPage },
    async (req, reply) => {
      const { store: hf } = filtersOf(ctx, req.query)
      return reply
        .type('text/csv; charset=utf-8')
        .header('cache-control', 'no-store')
        .header('x-content-type-options', 'nosniff')
        .header('content-disposition', 'attachment; filename="studiopool-history.csv"')
        .send(historyCsvStream(deps.store, hf))
    },
  )

  app.post(
    '/admin/instances/:id/:action',
    {
      schema: { hide: true, params: Type.Object({ id: Type.String(), action: Type.String() }) },
      preHandler: guard.adminPost,
    },
    async (req, reply) => {
      const by = ctx.actor(ctx.userOf(req))
      const { id } = req.params
      const action = ACTIONS.find((a) => a === req.params.action)
      if (!isInstanceId(id) || !action) return notFound(req, reply, 'Not found', 'There is no such instance or action.')
      const inst = await deps.store.getInstance(id)
      if (!inst) return notFound(req, reply, 'No such instance', 'This instance does not exist (any more).')
      if (action === 'delete') await deps.pool.release(id, 'admin', by)
      else if (action === 'restart') await deps.pool.restart(id, by)
      else if (action === 'suspend') await deps.pool.suspend(id, by)
      else await deps.pool.resume(id, by)
      return reply.redirect(`/admin?done=${DONE[action]}#h-inst`, 303)
    },
  )

  app.post(
    '/admin/keys',
    { schema: { hide: true, querystring: AdminQuery }, preHandler: guard.adminPost },
    async (req, reply) => createKey(ctx, req, reply, req.query),
  )

  app.post(
    '/admin/keys/:id/revoke',
    { schema: { hide: true, params: Type.Object({ id: Type.String() }) }, preHandler: guard.adminPost },
    async (req, reply) => {
      const { id } = req.params
      if (!isKeyId(id) || !(await deps.keyring.revoke(id)))
        return notFound(req, reply, 'No such key', 'This key does not exist or is already revoked.')
      await deps.pool.audit(null, 'key-revoked', ctx.actor(ctx.userOf(req)), { id })
      return reply.redirect('/admin?done=revoked#h-keys', 303)
    },
  )
}

/** A key from the admin page's form: the secret is shown once, on the page this answers with. */
async function createKey(ctx: DashboardContext, req: FastifyRequest, reply: FastifyReply, q: Query) {
  const { deps } = ctx
  const user = ctx.userOf(req)
  const form = formOf(req)
  const name = (form.name ?? '').trim()
  const role = KEY_ROLES.find((r) => r === form.role)
  if (!isKeyName(name) || !role) {
    return adminPage(ctx, req, reply, q, {
      status: 400,
      notice: {
        text: 'A key needs a name of 1–64 letters, digits, dots, dashes or underscores, and a role.',
        error: true,
      },
    })
  }
  let created
  try {
    created = await deps.keyring.create(name, role)
  } catch (err) {
    if (isAppError(err) && err.code === 'CONFLICT')
      return adminPage(ctx, req, reply, q, { status: 409, notice: { text: err.message, error: true } })
    throw err
  }
  await deps.pool.audit(null, 'key-created', ctx.actor(user), { name, role, id: created.key.id })
  return adminPage(ctx, req, reply, q, {
    status: 201,
    createdKey: { name, role, secret: created.secret },
  })
}

/** The history filters of the admin page, as the form shows them and as the store takes them. */
function filtersOf(ctx: DashboardContext, q: Query): { filters: HistoryFilters; store: HistoryFilter } {
  const s = (k: string) => {
    const v = q[k]
    return typeof v === 'string' ? v.trim() : ''
  }
  const user = s('user').slice(0, 200)
  const template = ctx.config.templates.some((t) => t.name === s('template')) ? s('template') : ''
  const from = DATE_RE.test(s('from')) && Number.isFinite(Date.parse(s('from'))) ? s('from') : ''
  const to = DATE_RE.test(s('to')) && Number.isFinite(Date.parse(s('to'))) ? s('to') : ''
  return {
    filters: { user, template, from, to },
    store: {
      ...(user ? { userId: user } : {}),
      ...(template ? { template } : {}),
      ...(from ? { from: Date.parse(`${from}T00:00:00Z`) } : {}),
      ...(to ? { to: Date.parse(`${to}T00:00:00Z`) + DAY_MS } : {}),
    },
  }
}

async function adminPage(
  ctx: DashboardContext,
  req: FastifyRequest,
  reply: FastifyReply,
  q: Query,
  extra: PageExtra = {},
): Promise<FastifyReply> {
  const { deps, config } = ctx
  const now = Date.now()
  const { filters, store: hf } = filtersOf(ctx, extra.createdKey ? {} : q)
  const [counts, active, instances, queue, samples, history, keys, forecasts] = await Promise.all([
    deps.store.countByState(),
    deps.store.countActive(),
    deps.store.listInstances({ states: [...LIVE_STATES, 'stopping'], limit: 1000 }),
    deps.store.listQueued(undefined, 500),
    deps.store.listStateSamples(now - DAY_MS, now),
    deps.store.listHistory({ ...hf, limit: HISTORY_PAGE }),
    deps.keyring.list(),
    forecastSection(config, deps.store, deps.pool, now),
  ])
  const month = new Date(now)
  const usage = await deps.pool.cost.usage(Date.UTC(month.getUTCFullYear(), month.getUTCMonth(), 1), now)
  const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v) as [string, string][])
  const done = typeof q.done === 'string' ? ADMIN_NOTICES[q.done] : undefined
  const suspendable = new Set(
    config.templates.filter((t) => deps.providers.get(t.provider)?.capabilities.supportsSuspend).map((t) => t.name),
  )
  return ctx.html(
    reply,
    extra.status ?? 200,
    renderAdminView({
      viewer: ctx.viewer(req),
      now,
      templates: config.templates.map((t) => ({
        template: t,
        counts: Object.fromEntries(counts.filter((c) => c.template === t.name).map((c) => [c.state, c.count])),
        unavailable: deps.pool.unavailableReason(t.name),
      })),
      poolMax: config.pool.maxInstances,
      isolation: deps.pool.isolation(),
      shared: await deps.pool.sharedStatus(),
      active: active.total,
      instances: instances.sort(byNewest),
      suspendable,
      queue,
      chart: stateChart(samples, now - DAY_MS, now),
      forecasts,
      history,
      historyLimit: HISTORY_PAGE,
      filters,
      csvHref: `/admin/history.csv${params.size ? `?${params}` : ''}`,
      keys,
      notice: extra.notice ?? (done ? { text: done } : undefined),
      createdKey: extra.createdKey,
      sessionUrl: (id) => deps.links.sessionUrl(id),
      cost: renderAdminCost(usage, usage.budgets),
    }),
  )
}

function byNewest(a: Instance, b: Instance): number {
  return b.createdAt - a.createdAt
}
