import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { UnauthorizedError } from '../../domain/errors.js'
import type { ApiDeps } from '../context.js'
import { InstanceId } from '../schemas.js'

/** The instance's own progress callback (MLiy-style): authenticated by its per-instance token, not a key. */
export async function progressRoute(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()
  app.post(
    '/api/v1/instances/:id/progress',
    {
      schema: {
        tags: ['instances'],
        summary: 'Progress report from the instance itself (Bearer <per-instance progress token>)',
        params: Type.Object({ id: InstanceId }),
        body: Type.Object(
          {
            progress: Type.Number({ minimum: 0, maximum: 100 }),
            message: Type.Optional(Type.String({ maxLength: 200 })),
            /** Where the app listens (a Slurm job's wrapper); the provider must vouch for it. */
            address: Type.Optional(
              Type.Object(
                {
                  // A DNS name, an IPv4 literal or an IPv6 literal (bare or in brackets).
                  host: Type.String({
                    minLength: 1,
                    maxLength: 253,
                    pattern: '^(?:[A-Za-z0-9.-]+|\\[?[0-9A-Fa-f:.]+\\]?)$',
                  }),
                  port: Type.Integer({ minimum: 1, maximum: 65535 }),
                },
                { additionalProperties: false },
              ),
            ),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (req) => {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')
      if (!m) throw new UnauthorizedError('missing progress token')
      const inst = await deps.pool.reportProgress(
        req.params.id,
        m[1]!,
        req.body.progress,
        req.body.message ?? '',
        req.body.address,
      )
      return { instanceId: inst.id, progress: inst.progress, message: inst.progressMessage }
    },
  )
}
