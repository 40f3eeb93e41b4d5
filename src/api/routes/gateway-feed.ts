import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { MAX_EPOCH_MS } from '../../domain/ids.js'
import { InstanceId } from '../schemas.js'
import type { ActivitySink, NonceLedger, RouteEvent, RouteSource } from '../../domain/routes.js'

export interface GatewayFeedOptions {
  readonly routes: RouteSource
  readonly activity: ActivitySink
  readonly nonces: NonceLedger
  /** Comment line sent on idle streams so proxies keep them open and gateways notice a dead API. Default 15 s. */
  readonly heartbeatMs?: number
  /** Aborted when the server shuts down: the stream ends cleanly (the gateway reconnects to another replica). */
  readonly shuttingDown?: AbortSignal
}

const ActivityBody = Type.Object(
  {
    entries: Type.Array(
      Type.Object(
        { id: InstanceId, at: Type.Integer({ minimum: 0, maximum: MAX_EPOCH_MS }) },
        { additionalProperties: false },
      ),
      { maxItems: 10_000 },
    ),
  },
  { additionalProperties: false },
)
const NonceBody = Type.Object(
  {
    nonce: Type.String({ minLength: 16, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' }),
    expiresAt: Type.Integer({ minimum: 0, maximum: MAX_EPOCH_MS }),
  },
  { additionalProperties: false },
)

/**
 * What a split-mode gateway (`serve --role gateway`) needs from the API:
 * - `GET /api/v1/gateway/routes`: server-sent events, a `reset` (the whole table) then
 *   `upsert`/`remove` events, each `data:` one JSON RouteEvent; `:` heartbeat comments.
 * - `POST /api/v1/gateway/activity` `{entries:[{id, at}]}` → 204.
 * - `POST /api/v1/gateway/nonces` `{nonce, expiresAt}` → `{first}`.
 * Authentication (a proxy or admin key) is the caller's hook around this plugin.
 */
export const gatewayFeedRoutes: FastifyPluginAsyncTypebox<GatewayFeedOptions> = async (app, opts) => {
  const heartbeatMs = opts.heartbeatMs ?? 15_000

  app.get(
    '/api/v1/gateway/routes',
    {
      schema: { tags: ['gateway'], summary: 'Route change stream for split-mode gateways (SSE)', hide: true },
    },
    (req, reply) => {
      reply.hijack()
      const res = reply.raw
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        'x-accel-buffering': 'no', // nginx: do not buffer the stream
        connection: 'keep-alive',
      })
      res.socket?.setNoDelay(true)
      let id = 0
      const send = (event: RouteEvent) => {
        res.write(`id: ${++id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`)
      }
      const unsubscribe = opts.routes.subscribe(send)
      const beat = setInterval(() => res.write(': hb\n\n'), heartbeatMs)
      const end = () => res.end()
      opts.shuttingDown?.addEventListener('abort', end, { once: true })
      const stop = () => {
        clearInterval(beat)
        unsubscribe()
        opts.shuttingDown?.removeEventListener('abort', end)
      }
      req.raw.on('close', stop)
      res.on('close', stop)
    },
  )

  app.post(
    '/api/v1/gateway/activity',
    { schema: { tags: ['gateway'], summary: 'Batched activity from a split-mode gateway', body: ActivityBody } },
    async (req, reply) => {
      const { entries } = req.body
      // A gateway's clock may run ahead; never record activity in the future.
      const now = Date.now()
      await opts.activity.recordActivity(entries.map((e) => ({ id: e.id, at: Math.min(e.at, now) })))
      return reply.code(204).send()
    },
  )

  app.post(
    '/api/v1/gateway/nonces',
    { schema: { tags: ['gateway'], summary: 'Consume a launch-token nonce once', body: NonceBody } },
    async (req) => {
      const { nonce, expiresAt } = req.body
      return { first: await opts.nonces.consumeOnce(nonce, expiresAt) }
    },
  )
}
