import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { ConflictError, NotFoundError, ValidationError } from '../../domain/errors.js'
import { requireRole, type ApiDeps } from '../context.js'
import { UserId } from '../schemas.js'

const err = { 400: { $ref: 'Error#' }, 401: { $ref: 'Error#' }, 403: { $ref: 'Error#' }, 404: { $ref: 'Error#' } }
const ProviderName = Type.String({ pattern: '^[a-z][a-z0-9-]{0,30}$' })
const HomeRef = Type.String({ minLength: 1, maxLength: 400, pattern: '^[A-Za-z0-9][A-Za-z0-9_./-]*$' })

/**
 * Per-user persistent homes (architecture.md contract 4: a user's home outlives their sessions and is
 * deleted only by an explicit admin action): `GET /api/v1/homes[?userId=]` lists them across the
 * providers that keep homes (docker: the home volumes on every host), `DELETE
 * /api/v1/homes?provider=&ref=` deletes one. Admin only. The CLI's `studiopool homes` calls these.
 */
export async function homeRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()
  const principal = (req: FastifyRequest) => req.principal!
  const withHomes = () => [...deps.providers].filter(([, p]) => p.listHomes && p.deleteHome)

  app.get(
    '/api/v1/homes',
    {
      schema: {
        tags: ['homes'],
        summary: "Users' persistent homes (volumes), optionally of one user (admin)",
        querystring: Type.Object({ userId: Type.Optional(UserId) }, { additionalProperties: false }),
        response: err,
      },
    },
    async (req) => {
      requireRole(principal(req))
      const { userId } = req.query
      const homes: { provider: string; ref: string; owner: string; createdAt: string | null; where: string }[] = []
      const unreachable: string[] = []
      for (const [name, p] of withHomes()) {
        const r = await p.listHomes!({ log: deps.log }, userId)
        for (const h of r.homes) homes.push({ provider: name, ...h })
        unreachable.push(...r.unreachable)
      }
      return { homes, unreachable }
    },
  )

  app.delete(
    '/api/v1/homes',
    {
      schema: {
        tags: ['homes'],
        summary: "Deletes one user's home (admin; refused while a session uses it)",
        querystring: Type.Object({ provider: ProviderName, ref: HomeRef }, { additionalProperties: false }),
        response: { ...err, 409: { $ref: 'Error#' } },
      },
    },
    async (req) => {
      requireRole(principal(req))
      const q = req.query
      const p = deps.providers.get(q.provider)
      if (!p?.deleteHome)
        throw new ValidationError(`provider "${q.provider}" keeps no homes here`, [
          {
            path: '/querystring/provider',
            message: `one of: ${
              withHomes()
                .map(([n]) => n)
                .join(', ') || '(none)'
            }`,
          },
        ])
      const r = await p.deleteHome(q.ref, { log: deps.log })
      if (r === 'absent') throw new NotFoundError(`no home "${q.ref}" on ${q.provider}`)
      if (r === 'in-use') throw new ConflictError(`home "${q.ref}" is in use by a session; end the session first`)
      deps.log.info({ provider: q.provider, ref: q.ref }, 'home deleted by an admin')
      return { deleted: true, provider: q.provider, ref: q.ref }
    },
  )
}
