import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import { NotFoundError, ValidationError } from '../../domain/errors.js'
import { MAX_EPOCH_MS } from '../../domain/ids.js'
import { INSTANCE_STATES, LIVE_STATES, type Assignment, type InstanceState } from '../../domain/instance.js'
import { KEY_ROLES, type KeyRole } from '../../domain/keys.js'
import { canAccess, keyNameOf, requireRole, roleOf, type ApiDeps } from '../context.js'
import { deleteInstance } from '../commands/delete-instance.js'
import { getStatus } from '../commands/get-status.js'
import { requestSession } from '../commands/request-session.js'
import { InstanceId, TemplateName, UserId } from '../schemas.js'
import { assignmentView, instanceView, keyPairOf } from '../views.js'

const err = { 400: { $ref: 'Error#' }, 401: { $ref: 'Error#' }, 403: { $ref: 'Error#' }, 404: { $ref: 'Error#' } }
const IdParams = Type.Object({ id: InstanceId })
const Q = (props: Record<string, ReturnType<typeof Type.String>>) => Type.Object(props, { additionalProperties: false })
const QStr = (description: string, pattern?: string) =>
  Type.Optional(Type.String({ description, maxLength: 200, ...(pattern ? { pattern } : {}) }))
const QInt = (description: string) => Type.Optional(Type.String({ description, pattern: '^\\d{1,9}$' }))
const QTime = (description: string) =>
  Type.Optional(Type.String({ description: `${description} (ISO 8601 or epoch ms)`, maxLength: 40 }))

function parseTime(v: string | undefined, path: string): number | undefined {
  if (v === undefined) return undefined
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v)
  // Bounded: 1e20 made toISOString() throw RangeError, and Postgres' bigint refused 2^63 (issue 9 item 8).
  if (!Number.isFinite(n) || n < 0 || n > MAX_EPOCH_MS)
    throw new ValidationError('not a time', [
      { path, message: 'use ISO 8601 or epoch milliseconds between 1970 and 9999' },
    ])
  return n
}

function parseStates(v: string | undefined): InstanceState[] | undefined {
  if (!v) return undefined
  const list = v.split(',')
  for (const s of list)
    if (!(INSTANCE_STATES as readonly string[]).includes(s))
      throw new ValidationError(`unknown state "${s}"`, [
        { path: '/querystring/state', message: `one of ${INSTANCE_STATES.join(', ')}` },
      ])
  return list as InstanceState[]
}

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

/** REST API v1 (contract 2): the same operations as the command protocol, as resources. */
export async function restRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const p = (req: FastifyRequest) => req.principal!

  app.post(
    '/api/v1/sessions',
    {
      schema: {
        tags: ['sessions'],
        summary: 'Request a session for a user (REQUEST_SESSION)',
        body: Type.Object({ userId: UserId, template: Type.Optional(TemplateName) }, { additionalProperties: false }),
        response: { 200: { $ref: 'SessionGrant#' }, ...err, 503: { $ref: 'Error#' } },
      },
    },
    async (req) => requestSession(deps, { principal: p(req) }, req.body as { userId: string; template?: string }),
  )

  app.get(
    '/api/v1/sessions',
    {
      schema: {
        tags: ['sessions'],
        summary: "A user's live sessions",
        querystring: Q({ userId: Type.String({ minLength: 1, maxLength: 200 }) as never }),
      },
    },
    async (req) => {
      const { userId } = req.query as { userId: string }
      const rows = await deps.store.listInstances({ ownerId: userId, states: LIVE_STATES })
      const visible = rows.filter((i) => canAccess(p(req), i, userId))
      return {
        sessions: await Promise.all(
          visible.map(async (i) =>
            instanceView(
              i,
              deps.links,
              i.state === 'queued' ? await deps.store.queuePosition(i.id) : null,
              keyPairOf(deps, i.template),
            ),
          ),
        ),
      }
    },
  )

  app.get(
    '/api/v1/instances',
    {
      schema: {
        tags: ['instances'],
        summary: 'List instances (admin, proxy)',
        querystring: Q({
          state: QStr('comma-separated states'),
          template: QStr('template name'),
          userId: QStr('owner'),
          limit: QInt('at most this many (default 1000)'),
        }),
      },
    },
    async (req) => {
      requireRole(p(req), 'proxy')
      const q = req.query as { state?: string; template?: string; userId?: string; limit?: string }
      const rows = await deps.store.listInstances({
        states: parseStates(q.state) ?? LIVE_STATES,
        template: q.template,
        ownerId: q.userId,
        limit: Math.min(Number(q.limit ?? 1000), 10_000),
      })
      return { instances: rows.map((i) => instanceView(i, deps.links, null, keyPairOf(deps, i.template))) }
    },
  )

  app.get(
    '/api/v1/instances/:id',
    {
      schema: {
        tags: ['instances'],
        summary: 'One instance (GET_STATUS); requester keys must name the owner',
        params: IdParams,
        querystring: Q({ userId: QStr('owner (required for requester keys)') }),
        response: { 200: Type.Object({ instance: Type.Ref('Instance') }), ...err },
      },
    },
    async (req) =>
      getStatus(
        deps,
        { principal: p(req) },
        { instanceId: (req.params as { id: string }).id, userId: (req.query as { userId?: string }).userId },
      ),
  )

  app.delete(
    '/api/v1/instances/:id',
    {
      schema: {
        tags: ['instances'],
        summary: 'End the session and terminate the instance (idempotent)',
        params: IdParams,
        querystring: Q({ userId: QStr('owner') }),
      },
    },
    async (req) =>
      deleteInstance(
        deps,
        { principal: p(req) },
        { instanceId: (req.params as { id: string }).id, userId: (req.query as { userId?: string }).userId },
      ),
  )

  for (const action of ['stop', 'restart', 'suspend', 'resume', 'start'] as const) {
    app.post(
      `/api/v1/instances/:id/${action}`,
      { schema: { tags: ['instances'], summary: `${action} an instance (admin)`, params: IdParams } },
      async (req) => {
        requireRole(p(req))
        const { id } = req.params as { id: string }
        const inst = await deps.store.getInstance(id)
        if (!inst) throw new NotFoundError('no such instance')
        const actor = keyNameOf(p(req))
        const next =
          action === 'stop'
            ? await deps.pool.release(id, 'admin', actor)
            : action === 'restart'
              ? await deps.pool.restart(id, actor)
              : action === 'suspend'
                ? await deps.pool.suspend(id, actor)
                : await deps.pool.resume(id, actor)
        return { instance: instanceView(next ?? inst, deps.links, null, keyPairOf(deps, inst.template)) }
      },
    )
  }

  app.get('/api/v1/templates', { schema: { tags: ['templates'], summary: 'Templates and their pools' } }, async () => {
    const counts = await deps.store.countByState()
    return {
      templates: deps.config.templates.map((t) => ({
        name: t.name,
        displayName: t.displayName,
        description: t.description,
        provider: t.provider,
        minFree: t.minFree,
        maxInstances: t.maxInstances,
        idleTimeoutSeconds: t.idleTimeoutMs / 1000,
        maxLifetimeSeconds: t.maxLifetimeMs / 1000,
        startTimeoutSeconds: t.startTimeoutMs / 1000,
        pathMode: t.pathMode,
        whenFull: t.whenFull,
        allowedGroups: t.allowedGroups,
        pricePerHour: t.pricePerHour,
        available: !deps.pool.unavailableReason(t.name),
        unavailableReason: deps.pool.unavailableReason(t.name) ?? null,
        instances: Object.fromEntries(
          counts
            .filter((c) => c.template === t.name && c.state !== 'terminated' && c.state !== 'failed')
            .map((c) => [c.state, c.count]),
        ),
      })),
      defaultTemplate: deps.config.pool.defaultTemplate,
    }
  })

  app.get(
    '/api/v1/pool',
    { schema: { tags: ['pool'], summary: 'Pool size by template and state, and the queue (admin, proxy)' } },
    async (req) => {
      requireRole(p(req), 'proxy')
      const [active, counts, queue] = await Promise.all([
        deps.store.countActive(),
        deps.store.countByState(),
        deps.store.listQueued(undefined, 1000),
      ])
      const byTemplate: Record<string, Record<string, number>> = {}
      for (const c of counts)
        if (c.state !== 'terminated' && c.state !== 'failed') (byTemplate[c.template] ??= {})[c.state] = c.count
      return {
        poolId: deps.config.pool.id,
        maxInstances: deps.config.pool.maxInstances,
        active: active.total,
        byTemplate,
        queue: queue.map((q, i) => ({
          position: i + 1,
          instanceId: q.id,
          template: q.template,
          userId: q.ownerId,
          since: new Date(q.createdAt).toISOString(),
        })),
      }
    },
  )

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
      const q = req.query as Record<string, string | undefined>
      const role = roleOf(p(req))
      if (role === 'requester' && !q.userId)
        throw new ValidationError('requester keys must name a userId', [
          { path: '/querystring/userId', message: 'required' },
        ])
      if (role === 'proxy') requireRole(p(req))
      let rows = await deps.store.listHistory({
        userId: q.userId,
        template: q.template,
        instanceId: q.instanceId,
        from: parseTime(q.from, '/querystring/from'),
        to: parseTime(q.to, '/querystring/to'),
        endReason: q.reason as never,
        limit: Math.min(Number(q.limit ?? 100), 10_000),
        offset: Number(q.offset ?? 0),
      })
      const principal = p(req)
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
      requireRole(p(req))
      const q = req.query as { from?: string; to?: string }
      const now = Date.now()
      const from = parseTime(q.from, '/querystring/from') ?? now - 30 * 86_400_000
      const to = parseTime(q.to, '/querystring/to') ?? now
      const rows = await deps.store.listHistory({ from, to, limit: 100_000 })
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
      requireRole(p(req))
      const q = req.query as { instanceId?: string; limit?: string }
      const events = await deps.store.listAudit({
        instanceId: q.instanceId,
        limit: Math.min(Number(q.limit ?? 200), 5000),
      })
      return { events: events.map((e) => ({ ...e, at: new Date(e.at).toISOString() })) }
    },
  )

  app.get(
    '/api/v1/keys',
    { schema: { tags: ['keys'], summary: 'API keys (admin); secrets are never shown again' } },
    async (req) => {
      requireRole(p(req))
      const keys = await deps.keyring.list()
      return {
        keys: keys.map((k) => ({
          ...k,
          createdAt: k.createdAt ? new Date(k.createdAt).toISOString() : null,
          revokedAt: k.revokedAt ? new Date(k.revokedAt).toISOString() : null,
          lastUsedAt: k.lastUsedAt ? new Date(k.lastUsedAt).toISOString() : null,
        })),
      }
    },
  )
  app.post(
    '/api/v1/keys',
    {
      schema: {
        tags: ['keys'],
        summary: 'Create a key (admin); the secret is in this response only',
        body: Type.Object(
          {
            name: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' }),
            role: Type.Union(KEY_ROLES.map((r) => Type.Literal(r))),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (req, reply) => {
      requireRole(p(req))
      const body = req.body as { name: string; role: KeyRole }
      const created = await deps.keyring.create(body.name, body.role)
      await deps.pool.audit(null, 'key-created', keyNameOf(p(req)), {
        name: body.name,
        role: body.role,
        id: created.key.id,
      })
      return reply
        .code(201)
        .send({ id: created.key.id, name: created.key.name, role: created.key.role, key: created.secret })
    },
  )
  app.delete(
    '/api/v1/keys/:id',
    {
      schema: {
        tags: ['keys'],
        summary: 'Revoke a key (admin)',
        params: Type.Object({ id: Type.String({ pattern: '^[a-z2-7]{12}$' }) }),
      },
    },
    async (req) => {
      requireRole(p(req))
      const { id } = req.params as { id: string }
      const ok = await deps.keyring.revoke(id)
      if (!ok) throw new NotFoundError('no such active key')
      await deps.pool.audit(null, 'key-revoked', keyNameOf(p(req)), { id })
      return { status: 'OK' }
    },
  )
}
