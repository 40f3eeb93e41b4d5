import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { NotFoundError } from '../../domain/errors.js'
import { KEY_ROLES } from '../../domain/keys.js'
import { keyNameOf, requireRole, type ApiDeps } from '../context.js'
import { decodeCursor, LISTS, pageLimit, pageOf, pageQuery } from '../paging.js'
import { KeyId, KeyName } from '../schemas.js'
import { Q } from './query.js'

/** Code-unit order, the same as the stores' `id` comparison for these ASCII ids. */
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

/** API keys (admin): list, create (the secret shown once), revoke. */
export async function keyRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()

  app.get(
    '/api/v1/keys',
    {
      schema: {
        tags: ['keys'],
        summary: 'API keys (admin), configured ones first, then by creation; secrets are never shown again',
        querystring: Q(pageQuery(LISTS.keys)),
      },
    },
    async (req, reply) => {
      requireRole(req.principal!)
      const limit = pageLimit(LISTS.keys, req.query.limit)
      const after = decodeCursor(LISTS.keys, {}, req.query.cursor)
      // Keys are few (the configured ones and the store's): read them all and page in memory, by the
      // same (createdAt, id) keyset as the other lists, so a key made or revoked mid-walk moves no other.
      const all = (await deps.keyring.list()).sort((a, b) => a.createdAt - b.createdAt || cmp(a.id, b.id))
      const rest = after
        ? all.filter(
            (k) =>
              k.createdAt > Number(after[0]) || (k.createdAt === Number(after[0]) && cmp(k.id, String(after[1])) > 0),
          )
        : all
      const page = pageOf(
        req,
        reply,
        LISTS.keys,
        { rows: rest.slice(0, limit + 1), limit, total: all.length },
        {},
        (k) => [k.createdAt, k.id],
      )
      return {
        keys: page.rows.map((k) => ({
          ...k,
          createdAt: k.createdAt ? new Date(k.createdAt).toISOString() : null,
          revokedAt: k.revokedAt ? new Date(k.revokedAt).toISOString() : null,
          lastUsedAt: k.lastUsedAt ? new Date(k.lastUsedAt).toISOString() : null,
        })),
        nextCursor: page.nextCursor,
        total: page.total,
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
          { name: KeyName, role: Type.Union(KEY_ROLES.map((r) => Type.Literal(r))) },
          { additionalProperties: false },
        ),
      },
    },
    async (req, reply) => {
      requireRole(req.principal!)
      const { name, role } = req.body
      const created = await deps.keyring.create(name, role)
      await deps.pool.audit(null, 'key-created', keyNameOf(req.principal!), { name, role, id: created.key.id })
      return reply
        .code(201)
        .send({ id: created.key.id, name: created.key.name, role: created.key.role, key: created.secret })
    },
  )

  app.delete(
    '/api/v1/keys/:id',
    { schema: { tags: ['keys'], summary: 'Revoke a key (admin)', params: Type.Object({ id: KeyId }) } },
    async (req) => {
      requireRole(req.principal!)
      const { id } = req.params
      const ok = await deps.keyring.revoke(id)
      if (!ok) throw new NotFoundError('no such active key')
      await deps.pool.audit(null, 'key-revoked', keyNameOf(req.principal!), { id })
      return { status: 'OK' }
    },
  )
}
