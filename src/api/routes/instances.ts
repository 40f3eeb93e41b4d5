import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { NotFoundError } from '../../domain/errors.js'
import { LIVE_STATES } from '../../domain/instance.js'
import { canAccess, keyNameOf, requireRole, type ApiDeps } from '../context.js'
import { deleteInstance } from '../commands/delete-instance.js'
import { getStatus } from '../commands/get-status.js'
import { requestSession } from '../commands/request-session.js'
import { TemplateName, UserId } from '../schemas.js'
import { instanceView, keyPairOf } from '../views.js'
import { errorResponses, IdParams, Q, QInt, QStr, parseStates } from './query.js'

/** Sessions and instances: request, list, read, delete, and the admin's lifecycle actions. */
export async function sessionRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()

  app.post(
    '/api/v1/sessions',
    {
      schema: {
        tags: ['sessions'],
        summary: 'Request a session for a user (REQUEST_SESSION)',
        body: Type.Object({ userId: UserId, template: Type.Optional(TemplateName) }, { additionalProperties: false }),
        response: { 200: { $ref: 'SessionGrant#' }, ...errorResponses, 503: { $ref: 'Error#' } },
      },
    },
    async (req) => requestSession(deps, { principal: req.principal! }, req.body),
  )

  app.get(
    '/api/v1/sessions',
    { schema: { tags: ['sessions'], summary: "A user's live sessions", querystring: Q({ userId: UserId }) } },
    async (req) => {
      const { userId } = req.query
      const rows = await deps.store.listInstances({ ownerId: userId, states: LIVE_STATES })
      const visible = rows.filter((i) => canAccess(req.principal!, i, userId))
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
}

export async function instanceRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()

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
      requireRole(req.principal!, 'proxy')
      const q = req.query
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
        response: { 200: Type.Object({ instance: Type.Ref('Instance') }), ...errorResponses },
      },
    },
    async (req) =>
      getStatus(deps, { principal: req.principal! }, { instanceId: req.params.id, userId: req.query.userId }),
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
      deleteInstance(deps, { principal: req.principal! }, { instanceId: req.params.id, userId: req.query.userId }),
  )

  for (const action of ['stop', 'restart', 'suspend', 'resume', 'start'] as const) {
    app.post(
      `/api/v1/instances/:id/${action}`,
      { schema: { tags: ['instances'], summary: `${action} an instance (admin)`, params: IdParams } },
      async (req) => {
        const p = req.principal!
        requireRole(p)
        const { id } = req.params
        const inst = await deps.store.getInstance(id)
        if (!inst) throw new NotFoundError('no such instance')
        const actor = keyNameOf(p)
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
}
