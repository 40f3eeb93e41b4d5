import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { AppError, NotFoundError, ValidationError } from '../../domain/errors.js'
import type { Instance } from '../../domain/instance.js'
import { isLive } from '../../domain/instance.js'
import type { RouteEntry, RouteEvent } from '../../domain/routes.js'
import { canAccess, roleOf, type ApiDeps } from '../context.js'
import { instanceView, keyPairOf } from '../views.js'
import { IdParams, Q, QStr } from './query.js'

/** Heartbeat comment interval on an idle progress stream. */
export const SESSION_EVENTS_HEARTBEAT_MS = 15_000

/** One step of a session's progress, as the stream sends it (`event: progress`). */
export interface ProgressStep {
  readonly instanceId: string
  readonly state: string
  readonly progress: number
  readonly message: string
  readonly queuePosition: number | null
}

/**
 * The event id of a step: the instance's generation, state and progress. Two steps with the same id
 * say the same thing, so a client that reconnects with `Last-Event-ID` is not sent the step it has
 * already seen (and is sent the current one when anything changed meanwhile, on any replica).
 */
export const stepId = (generation: number, s: ProgressStep): string =>
  `${generation}.${s.state}.${s.progress}.${s.queuePosition ?? 0}`

const fromRoute = (r: RouteEntry): ProgressStep => ({
  instanceId: r.instanceId,
  state: r.state,
  progress: r.progress,
  message: r.progressMessage,
  queuePosition: r.queuePosition,
})

/**
 * `GET /api/v1/instances/{id}/events`: a session's progress as server-sent events, for the requester
 * that waits for it (instead of polling GET_STATUS). `event: progress` for every change of state,
 * progress or queue position, then `event: ready` (the instance, with its links) or `event: ended`
 * (`{state, reason}`), after which the server closes the stream. `: hb` comments on idle streams; the
 * stream also ends cleanly when the server shuts down (the client reconnects with `Last-Event-ID`).
 */
export async function sessionEventRoutes(scope: FastifyInstance, deps: ApiDeps): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()
  app.get(
    '/api/v1/instances/:id/events',
    {
      schema: {
        tags: ['instances'],
        summary: "A session's progress until ready or ended (SSE); requester keys must name the owner",
        params: IdParams,
        querystring: Q({ userId: QStr('owner (required for requester keys)') }),
      },
    },
    async (req, reply) => {
      const p = req.principal!
      const { userId } = req.query
      if (roleOf(p) === 'requester' && userId === undefined)
        throw new ValidationError('userId is needed', [
          { path: '/querystring/userId', message: 'required for requester keys' },
        ])
      const inst = await deps.store.getInstance(req.params.id)
      if (!inst || !canAccess(p, inst, userId)) throw new NotFoundError('no such instance')
      const routes = deps.gatewayFeed?.routes
      if (!routes) throw new AppError('PROVIDER_UNAVAILABLE', 'the progress stream is not served by this process')
      const last = req.headers['last-event-id']
      reply.hijack()
      openStream(deps, reply.raw, inst, typeof last === 'string' ? last : null, (listener) =>
        routes.subscribe(listener),
      )
    },
  )
}

type Raw = import('node:http').ServerResponse

/** One progress stream on a response (exported for its tests). */
export function openStream(
  deps: ApiDeps,
  res: Raw,
  inst: Instance,
  lastId: string | null,
  subscribe: (l: (ev: RouteEvent) => void) => () => void,
): void {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
    'x-content-type-options': 'nosniff',
  })
  res.socket?.setNoDelay(true)
  res.write('retry: 2000\n\n')
  let sent = lastId
  let done = false
  const write = (id: string | null, event: string, data: unknown) => {
    if (done || res.writableEnded) return
    res.write(`${id ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }
  const step = (generation: number, s: ProgressStep) => {
    const id = stepId(generation, s)
    if (id === sent) return
    sent = id
    write(id, 'progress', s)
  }
  const finish = async () => {
    if (done) return
    const now = await deps.store.getInstance(inst.id).catch(() => null)
    if (done) return
    if (now && now.state === 'ready') {
      const view = instanceView(now, deps.links, null, keyPairOf(deps, now.template))
      write(`${now.generation}.ready`, 'ready', { instance: view })
    } else if (!now || !isLive(now.state)) {
      write(`${now?.generation ?? 0}.ended`, 'ended', {
        instanceId: inst.id,
        state: now?.state ?? 'terminated',
        reason: now?.endReason ?? now?.failureReason ?? 'ended',
      })
    } else return
    close()
  }
  // Once its route is gone, the row may still say it is starting for a moment (the removal can reach
  // this stream before the write that ends it is visible here, e.g. on another Postgres connection):
  // the store is asked again until it says ended, or a route for the instance is back (a replacement).
  let routed = true
  let recheck: NodeJS.Timeout | undefined
  const afterRemoval = () => {
    void finish().then(() => {
      if (!done && !routed) recheck = setTimeout(afterRemoval, 250)
    })
  }
  const onRoute = (ev: RouteEvent) => {
    if (done) return
    const entries = ev.type === 'reset' ? ev.routes : ev.type === 'upsert' ? [ev.route] : []
    const mine = entries.find((r) => r.instanceId === inst.id)
    if (mine) {
      routed = true
      clearTimeout(recheck)
      step(mine.generation, fromRoute(mine))
      if (mine.state === 'ready') void finish()
    } else if (ev.type === 'remove' ? ev.instanceId === inst.id : ev.type === 'reset') {
      routed = false
      afterRemoval()
    }
  }
  const unsubscribe = subscribe(onRoute)
  const beat = setInterval(() => res.write(': hb\n\n'), SESSION_EVENTS_HEARTBEAT_MS)
  deps.shuttingDown?.addEventListener('abort', close, { once: true })
  function close() {
    if (done) return
    done = true
    clearInterval(beat)
    clearTimeout(recheck)
    unsubscribe()
    deps.shuttingDown?.removeEventListener('abort', close)
    if (!res.writableEnded) res.end()
  }
  res.on('close', close)
  res.on('error', close)
  // An instance that is already ready or ended (and so perhaps absent from the route table) answers at once.
  if (!isLive(inst.state) || inst.state === 'ready') void finish()
}
