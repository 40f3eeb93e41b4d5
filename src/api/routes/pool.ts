import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { WarmTarget } from '../../schedule/warm-target.js'
import type { Instance } from '../../domain/instance.js'
import type { Store } from '../../store/store.js'
import { requireRole, type ApiDeps } from '../context.js'
import { decodeCursor, LISTS, pageLimit, pageOf, pageQuery } from '../paging.js'
import { Q, QStr } from './query.js'

/** Templates and the pool's size and queue. */
export async function poolRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()

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
        /** The schedule's and the forecast's effective values as of the last worker cycle (docs/cost.md). */
        warmTarget: warmTargetView(deps.pool.warmTargets().get(t.name)),
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
      requireRole(req.principal!, 'proxy')
      const [active, counts, queue] = await Promise.all([
        deps.store.countActive(),
        deps.store.countByState(),
        deps.store.listQueued(undefined, QUEUE_SHOWN),
      ])
      const byTemplate: Record<string, Record<string, number>> = {}
      for (const c of counts)
        if (c.state !== 'terminated' && c.state !== 'failed') (byTemplate[c.template] ??= {})[c.state] = c.count
      return {
        poolId: deps.config.pool.id,
        maxInstances: deps.config.pool.maxInstances,
        active: active.total,
        byTemplate,
        queueLength: queuedIn(counts),
        /** The oldest QUEUE_SHOWN; the whole queue pages through GET /api/v1/pool/queue. */
        queue: await queueView(deps.store, queue),
      }
    },
  )

  queueRoute(scope, deps)

  app.get(
    '/api/v1/shared',
    {
      schema: {
        tags: ['pool'],
        summary:
          'Shared templates (mode: shared): bounds, wanted size, queue, instances and their connections (admin, proxy)',
      },
    },
    async (req) => {
      requireRole(req.principal!, 'proxy')
      return { shared: await deps.pool.sharedStatus() }
    },
  )
}

function warmTargetView(t: WarmTarget | undefined) {
  if (!t) return null
  return {
    minFree: t.minFree,
    maxInstances: t.maxInstances,
    available: t.available,
    opensAt: t.opensAt === null ? null : new Date(t.opensAt).toISOString(),
    scheduleMinFree: t.scheduleMinFree,
    predicted: t.predicted,
    applied: t.applied,
  }
}

/** Queued rows in the store's counts by template and state, of one template or of all. */
function queuedIn(counts: Awaited<ReturnType<Store['countByState']>>, template?: string): number {
  let n = 0
  for (const c of counts) if (c.state === 'queued' && (template === undefined || c.template === template)) n += c.count
  return n
}

/** How many queued rows GET /api/v1/pool shows (the oldest). */
const QUEUE_SHOWN = 1000

/**
 * Queued rows as the API shows them: position within the row's template (GET_STATUS's
 * queuePosition), from one count per template on the page, then counted on along the page.
 */
async function queueView(store: Store, rows: readonly Instance[]) {
  const next = new Map<string, number>()
  for (const r of rows) if (!next.has(r.template)) next.set(r.template, (await store.queuePosition(r.id)) ?? 1)
  return rows.map((r) => {
    const position = next.get(r.template)!
    next.set(r.template, position + 1)
    return {
      position,
      instanceId: r.id,
      template: r.template,
      userId: r.ownerId,
      since: new Date(r.createdAt).toISOString(),
    }
  })
}

/** GET /api/v1/pool/queue: the whole queue in pages (GET /api/v1/pool shows the oldest QUEUE_SHOWN). */
function queueRoute(scope: FastifyInstance, deps: ApiDeps): void {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()
  app.get(
    '/api/v1/pool/queue',
    {
      schema: {
        tags: ['pool'],
        summary:
          'The queue in pages, oldest first (admin, proxy); position is within its template, as GET_STATUS shows it',
        querystring: Q({ template: QStr('template name'), ...pageQuery(LISTS.queue) }),
      },
    },
    async (req, reply) => {
      requireRole(req.principal!, 'proxy')
      const q = req.query
      const filters = { template: q.template }
      const limit = pageLimit(LISTS.queue, q.limit)
      const after = decodeCursor(LISTS.queue, filters, q.cursor)
      const [rows, counts] = await Promise.all([
        deps.store.listQueued(
          q.template,
          limit + 1,
          after ? { createdAt: Number(after[0]), id: String(after[1]) } : undefined,
        ),
        deps.store.countByState(),
      ])
      const total = queuedIn(counts, q.template)
      const page = pageOf(req, reply, LISTS.queue, { rows, limit, total }, filters, (i) => [i.createdAt, i.id])
      return { queue: await queueView(deps.store, page.rows), nextCursor: page.nextCursor, total: page.total }
    },
  )
}
