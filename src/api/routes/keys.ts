import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { NotFoundError } from '../../domain/errors.js'
import { KEY_ROLES } from '../../domain/keys.js'
import { keyNameOf, requireRole, type ApiDeps } from '../context.js'
import { KeyId, KeyName } from '../schemas.js'

/** API keys (admin): list, create (the secret shown once), revoke. */
export async function keyRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()

  app.get(
    '/api/v1/keys',
    { schema: { tags: ['keys'], summary: 'API keys (admin); secrets are never shown again' } },
    async (req) => {
      requireRole(req.principal!)
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
