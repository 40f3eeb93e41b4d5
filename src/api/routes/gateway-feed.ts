import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { MAX_EPOCH_MS, TEMPLATE_NAME_PATTERN } from '../../domain/ids.js'
import type { SharedGateSnapshot, SharedLoadSink } from '../../domain/shared.js'
import { InstanceId } from '../schemas.js'
import type { ActivitySink, NonceLedger, RouteEvent, RouteSource } from '../../domain/routes.js'
import type { SessionControls } from '../../domain/pending-stop.js'
import { AppError } from '../../domain/errors.js'
import { UserId } from '../schemas.js'

export interface GatewayFeedOptions {
  readonly routes: RouteSource
  readonly activity: ActivitySink
  readonly nonces: NonceLedger
  /** Where split-mode gateways' shared-template load goes (the pool; issue 14). */
  readonly sharedLoad?: SharedLoadSink
  /** Comment line sent on idle streams so proxies keep them open and gateways notice a dead API. Default 15 s. */
  readonly heartbeatMs?: number
  /** Aborted when the server shuts down: the stream ends cleanly (the gateway reconnects to another replica). */
  readonly shuttingDown?: AbortSignal
  /** The warning banner's status and actions for a split-mode gateway (docs/widget.md); absent = not offered. */
  readonly controls?: SessionControls
  /** The budget half of shared templates' gate for split-mode gateways (issue 14); absent = no budgets refuse. */
  readonly sharedGate?: () => SharedGateSnapshot
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
const Count = Type.Integer({ minimum: 0, maximum: 1_000_000_000 })
/** A report period is about a second; ten minutes is more than any gateway that still reports can have counted. */
const BUSY_MAX_MS = 600_000
const InstanceShares = Type.Object(
  {
    id: InstanceId,
    generation: Count,
    busyMs: Type.Integer({ minimum: 0, maximum: BUSY_MAX_MS }),
    users: Type.Array(
      Type.Object(
        { userId: UserId, weight: Type.Integer({ minimum: 0, maximum: 1_000_000_000 }) },
        { additionalProperties: false },
      ),
      { maxItems: 10_000 },
    ),
  },
  { additionalProperties: false },
)
const SharedLoadBody = Type.Object(
  {
    loads: Type.Array(
      Type.Object(
        {
          template: Type.String({ pattern: TEMPLATE_NAME_PATTERN }),
          at: Type.Integer({ minimum: 0, maximum: MAX_EPOCH_MS }),
          source: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.:-]+$' })),
          instances: Type.Array(
            Type.Object({ id: InstanceId, connections: Count, requests: Count }, { additionalProperties: false }),
            { maxItems: 10_000 },
          ),
          waiting: Count,
          queued: Count,
          maxQueueWaitMs: Count,
          shares: Type.Optional(Type.Array(InstanceShares, { maxItems: 10_000 })),
        },
        { additionalProperties: false },
      ),
      { maxItems: 1000 },
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
 * - `GET /api/v1/gateway/sessions/{id}/stop-status` → the session's pending stop (404 once ended), and
 *   `POST /api/v1/gateway/sessions/{id}/{keep|stop|suspend}` `{userId}`: the warning banner's
 *   status and actions (docs/widget.md), for the user the gateway has checked.
 * - `POST /api/v1/gateway/shared-load` `{loads:[SharedLoad]}` → 204 (shared templates' load and users'
 *   shares of their instances since the last report, issue 14).
 * - `GET /api/v1/gateway/shared-gate` → `{budgets:[{scope, key, message}]}`: the hard budgets exceeded
 *   now, which the gateway applies to shared templates' new visitors (schedules it decides itself).
 * Authentication (a proxy or admin key) is the caller's hook around this plugin.
 */
export const gatewayFeedRoutes: FastifyPluginAsyncTypebox<GatewayFeedOptions> = async (app, opts) => {
  const heartbeatMs = opts.heartbeatMs ?? 15_000

  app.get(
    '/api/v1/gateway/routes',
    {
      schema: { tags: ['gateway'], summary: 'Route change stream for split-mode gateways (SSE)' },
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
    '/api/v1/gateway/shared-load',
    {
      schema: {
        tags: ['gateway'],
        summary: "A split-mode gateway's load of shared templates (docs/shared-pools.md)",
        body: SharedLoadBody,
      },
    },
    async (req, reply) => {
      // A gateway's clock may run ahead: a report is never newer than now.
      const now = Date.now()
      opts.sharedLoad?.reportSharedLoad(req.body.loads.map((l) => ({ ...l, at: Math.min(l.at, now) })))
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

  app.get(
    '/api/v1/gateway/shared-gate',
    {
      schema: {
        tags: ['gateway'],
        summary: "The hard budgets exceeded now, for a split-mode gateway's shared templates (docs/shared-pools.md)",
      },
    },
    (): SharedGateSnapshot => opts.sharedGate?.() ?? { budgets: [] },
  )

  if (opts.controls) widgetRoutes(app, opts.controls)
}

const SessionParams = Type.Object({ id: InstanceId }, { additionalProperties: false })
const ActionParams = Type.Object(
  { id: InstanceId, action: Type.Union([Type.Literal('keep'), Type.Literal('stop'), Type.Literal('suspend')]) },
  { additionalProperties: false },
)
const ActionBody = Type.Object({ userId: UserId }, { additionalProperties: false })

function widgetRoutes(app: Parameters<FastifyPluginAsyncTypebox>[0], controls: SessionControls): void {
  const ended = () => new AppError('NOT_FOUND', 'this session has ended')
  app.get(
    '/api/v1/gateway/sessions/:id/stop-status',
    { schema: { tags: ['gateway'], summary: "A session's pending stop (the warning banner)", params: SessionParams } },
    async (req) => (await controls.status(req.params.id)) ?? Promise.reject(ended()),
  )
  app.post(
    '/api/v1/gateway/sessions/:id/:action',
    {
      schema: {
        tags: ['gateway'],
        summary: "The warning banner's actions: keep working, stop, suspend",
        params: ActionParams,
        body: ActionBody,
      },
    },
    async (req) => {
      const { id, action } = req.params
      const { userId } = req.body
      if (action === 'keep') return (await controls.keepWorking(id, userId)) ?? Promise.reject(ended())
      await (action === 'stop' ? controls.stop(id, userId) : controls.suspend(id, userId))
      return { status: 'OK' }
    },
  )
}
