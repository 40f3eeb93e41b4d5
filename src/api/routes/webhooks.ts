import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ValidationError } from '../../domain/errors.js'
import type { DeliveryStatus } from '../../domain/webhooks.js'
import { requireRole, type ApiDeps } from '../context.js'
import { decodeCursor, LISTS, pageLimit, pageOf, pageQuery } from '../paging.js'
import { Q, QStr } from './query.js'

const STATUSES: readonly DeliveryStatus[] = ['pending', 'delivered', 'failed']

/** `GET /api/v1/webhooks/deliveries` (admin): the delivery log, newest first (docs/webhooks.md). */
export async function webhookRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()
  app.get(
    '/api/v1/webhooks/deliveries',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Webhook deliveries, newest first (admin)',
        querystring: Q({
          webhook: QStr('webhook name'),
          status: QStr('pending, delivered or failed'),
          ...pageQuery(LISTS.deliveries),
        }),
      },
    },
    async (req, reply) => {
      requireRole(req.principal!)
      const q = req.query
      if (q.status !== undefined && !STATUSES.includes(q.status as DeliveryStatus))
        throw new ValidationError('unknown delivery status', [
          { path: '/querystring/status', message: `one of ${STATUSES.join(', ')}` },
        ])
      const filter = { webhook: q.webhook, status: q.status as DeliveryStatus | undefined }
      const limit = pageLimit(LISTS.deliveries, q.limit)
      const after = decodeCursor(LISTS.deliveries, filter, q.cursor)
      const [rows, total] = await Promise.all([
        deps.store.webhooks.list({ ...filter, beforeSeq: after ? Number(after[0]) : undefined, limit: limit + 1 }),
        deps.store.webhooks.count(filter),
      ])
      const page = pageOf(req, reply, LISTS.deliveries, { rows, limit, total }, filter, (d) => [d.seq])
      return {
        nextCursor: page.nextCursor,
        total: page.total,
        deliveries: page.rows.map((d) => ({
          seq: d.seq,
          webhook: d.webhook,
          eventId: d.eventId,
          event: d.eventType,
          status: d.status,
          attempts: d.attempts,
          lastStatus: d.lastStatus,
          lastError: d.lastError,
          createdAt: new Date(d.createdAt).toISOString(),
          nextAttemptAt: d.status === 'pending' ? new Date(d.nextAttemptAt).toISOString() : null,
          deliveredAt: d.deliveredAt === null ? null : new Date(d.deliveredAt).toISOString(),
        })),
      }
    },
  )
}
