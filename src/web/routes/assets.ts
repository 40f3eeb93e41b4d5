import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { ASSETS } from '../assets.js'

/** The dashboard's one CSS and one JS file, immutable under their content hash. */
export const assetRoutes: FastifyPluginAsyncTypebox = async (app) => {
  for (const a of [ASSETS.css, ASSETS.js]) {
    app.get(a.path, { schema: { hide: true } }, async (req, reply) => {
      void reply
        .header('cache-control', 'public, max-age=31536000, immutable')
        .header('etag', a.etag)
        .header('x-content-type-options', 'nosniff')
      if (req.headers['if-none-match'] === a.etag) return reply.code(304).send()
      return reply.type(a.type).send(a.body)
    })
  }
}
