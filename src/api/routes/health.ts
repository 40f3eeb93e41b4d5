import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { AppError } from '../../domain/errors.js'
import type { Authenticate } from '../auth.js'
import type { ApiDeps } from '../context.js'
import { checkReadiness } from '../readiness.js'

/** /healthz (alive), /readyz (can serve) and /metrics (Prometheus, admin or proxy key). */
export async function healthRoutes(scope: FastifyInstance, deps: ApiDeps, authenticate: Authenticate): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()
  app.get('/healthz', { schema: { tags: ['health'], summary: 'alive', security: [] } }, async () => ({ status: 'ok' }))
  app.get(
    '/readyz',
    {
      schema: {
        tags: ['health'],
        summary: 'store writable, a template can serve, not shutting down (503 with reasons otherwise)',
        security: [],
      },
    },
    async (_req, reply) => {
      const r = await checkReadiness({
        store: deps.store,
        templates: deps.config.templates.map((t) => ({
          name: t.name,
          unavailable: deps.pool.unavailableReason(t.name),
        })),
        draining: deps.draining,
        replica: deps.replica,
      })
      // What each provider isolates (architecture.md contract 5); the notes only where something is not.
      const isolation = deps.pool
        .isolation()
        .map((i) => ({ provider: i.provider, isolated: i.isolated, ...(i.isolated ? {} : { notes: i.notes }) }))
      return reply
        .code(r.ready ? 200 : 503)
        .send({ status: r.ready ? 'ready' : 'not ready', checks: r.checks, isolation, replica: r.replica })
    },
  )
  app.get(
    '/metrics',
    {
      schema: { tags: ['health'], summary: 'Prometheus metrics (admin, proxy or metrics key)' },
      onRequest: authenticate,
    },
    async (req, reply) => {
      const p = req.principal!
      if (p.kind === 'key' && p.role === 'requester')
        throw new AppError('FORBIDDEN', 'metrics need an admin, proxy or metrics key')
      await refreshGauges(deps)
      return reply.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics())
    },
  )
}

async function refreshGauges(deps: ApiDeps): Promise<void> {
  const counts = await deps.store.countByState()
  deps.metrics.instances.reset()
  const assigned = await deps.store.listInstances({
    assigned: true,
    states: ['queued', 'provisioning', 'starting', 'ready', 'suspended'],
  })
  const a = new Map<string, number>()
  for (const i of assigned) a.set(`${i.template}|${i.state}`, (a.get(`${i.template}|${i.state}`) ?? 0) + 1)
  for (const c of counts) {
    if (c.state === 'terminated' || c.state === 'failed') continue
    const n = a.get(`${c.template}|${c.state}`) ?? 0
    deps.metrics.instances.set({ template: c.template, state: c.state, assigned: 'true' }, n)
    deps.metrics.instances.set({ template: c.template, state: c.state, assigned: 'false' }, c.count - n)
  }
  deps.metrics.queueLength.reset()
  for (const t of deps.config.templates)
    deps.metrics.queueLength.set(
      { template: t.name },
      counts.find((c) => c.template === t.name && c.state === 'queued')?.count ?? 0,
    )
}
