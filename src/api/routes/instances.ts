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
import { decodeCursor, LISTS, pageLimit, pageOf, pageQuery } from '../paging.js'
import { errorResponses, IdParams, Q, QStr, parseStates } from './query.js'

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
        response: {
          200: { $ref: 'SessionGrant#' },
          202: { $ref: 'SessionGrant#' },
          ...errorResponses,
          503: { $ref: 'Error#' },
        },
      },
    },
    // 200 when the session is ready (warm or existing), 202 while it is queued or starting: follow it on
    // /api/v1/instances/{id}/events or a webhook. The command protocol keeps answering 200 (seed clients).
    async (req, reply) => {
      const grant = await requestSession(deps, { principal: req.principal! }, req.body)
      return reply.code(grant.state === 'ready' ? 200 : 202).send(grant)
    },
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

/**
 * The verbs (README "Verbs"): `stop` ends the session and terminates the instance, as the
 * dashboard's Stop, the widget's Stop, the CLI's `stop` and DELETE do; `suspend` keeps the disk,
 * the owner and the URL, and `resume` brings it back (`start` is resume's older name).
 */
const ACTION_SUMMARY = {
  stop: 'Stop: end the session and terminate the instance (admin)',
  restart: 'Restart: a new generation under the same id, URL and owner (admin)',
  suspend: 'Suspend: stop the machine, keep its disk, owner and URL (admin)',
  resume: 'Resume a suspended instance (admin)',
  start: 'Resume a suspended instance: the older name of resume (admin)',
} as const

export async function instanceRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()

  listRoute(app, deps)

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
      { schema: { tags: ['instances'], summary: ACTION_SUMMARY[action], params: IdParams } },
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

/** GET /api/v1/instances (admin, proxy): the instances in pages (src/api/paging.ts). */
function listRoute(scope: FastifyInstance, deps: ApiDeps): void {
  scope.withTypeProvider<TypeBoxTypeProvider>().get(
    '/api/v1/instances',
    {
      schema: {
        tags: ['instances'],
        summary: 'List instances (admin, proxy), in pages: in id order, live ones unless `state` says otherwise',
        querystring: Q({
          state: QStr('comma-separated states'),
          template: QStr('template name'),
          userId: QStr('owner'),
          ...pageQuery(LISTS.instances),
        }),
      },
    },
    async (req, reply) => {
      requireRole(req.principal!, 'proxy')
      const q = req.query
      const states = parseStates(q.state) ?? LIVE_STATES
      const filter = { states, template: q.template, ownerId: q.userId }
      const digestOf = { states: [...states].sort(), template: q.template, ownerId: q.userId }
      const limit = pageLimit(LISTS.instances, q.limit)
      const after = decodeCursor(LISTS.instances, digestOf, q.cursor)
      // The worker's keyset read (id order on the primary key), one row more to know whether a page follows.
      const [rows, total] = await Promise.all([
        deps.store.listInstancesPage(filter, after ? String(after[0]) : null, limit + 1),
        deps.store.countInstances(filter),
      ])
      const page = pageOf(req, reply, LISTS.instances, { rows, limit, total }, digestOf, (i) => [i.id])
      return {
        instances: page.rows.map((i) => instanceView(i, deps.links, null, keyPairOf(deps, i.template))),
        nextCursor: page.nextCursor,
        total: page.total,
      }
    },
  )
}
