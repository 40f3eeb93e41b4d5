import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { WarmTarget } from '../../schedule/warm-target.js'
import { requireRole, type ApiDeps } from '../context.js'

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
