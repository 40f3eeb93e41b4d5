import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { RouteEntry, RouteEvent } from '../../domain/routes.js'
import type { DashboardContext } from '../context.js'
import type { Guards } from '../guards.js'

/** What the page's script needs of one instance. */
const view = (r: RouteEntry) => ({
  id: r.instanceId,
  template: r.template,
  state: r.state,
  progress: r.progress,
  message: r.progressMessage,
  queuePosition: r.queuePosition,
})

/** Live progress of the user's own instances, as server-sent events (`GET /events`). */
export const eventRoutes: FastifyPluginAsyncTypebox<{ ctx: DashboardContext; guard: Guards }> = async (
  app,
  { ctx, guard },
) => {
  const { deps, kit } = ctx

  app.get('/events', { schema: { hide: true }, preHandler: guard.stream }, async (req, reply) => {
    const user = ctx.userOf(req)
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      'x-content-type-options': 'nosniff',
    })
    res.write('retry: 3000\n\n')
    const send = (obj: unknown) => {
      if (!res.writableEnded) res.write(`data: ${JSON.stringify(obj)}\n\n`)
    }
    const unsubscribe = deps.routes.subscribe(ownFilter(user.userId, send))
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000)
    // The stream ends with the cookie that opened it; the browser reconnects and is asked to sign in.
    const expiry = setTimeout(
      () => res.end(),
      Math.max(
        1_000,
        Math.min(kit.read(req)?.claims.expiresAt ?? Date.now() + 3_600_000, Date.now() + 2 ** 30) - Date.now(),
      ),
    )
    // A shutting-down server ends the stream cleanly; the browser reconnects (to another replica).
    const end = () => res.end()
    deps.shuttingDown?.addEventListener('abort', end, { once: true })
    let closed = false
    const stop = () => {
      if (closed) return
      closed = true
      clearInterval(ping)
      clearTimeout(expiry)
      unsubscribe()
      deps.shuttingDown?.removeEventListener('abort', end)
    }
    req.raw.on('close', stop)
    res.on('close', stop)
    res.on('error', stop)
  })
}

/**
 * The route events one user may see: their own instances, and a `remove` when one of them leaves
 * the table or changes hands.
 */
export function ownFilter(userId: string, send: (message: unknown) => void): (ev: RouteEvent) => void {
  const mine = new Set<string>()
  return (ev) => {
    if (ev.type === 'reset') {
      const list = ev.routes.filter((r) => r.ownerId === userId)
      for (const id of mine) if (!list.some((r) => r.instanceId === id)) send({ type: 'remove', instanceId: id })
      mine.clear()
      for (const r of list) mine.add(r.instanceId)
      send({ type: 'reset', instances: list.map(view) })
    } else if (ev.type === 'upsert') {
      if (ev.route.ownerId === userId) {
        mine.add(ev.route.instanceId)
        send({ type: 'upsert', instances: [view(ev.route)] })
      } else if (mine.delete(ev.route.instanceId)) send({ type: 'remove', instanceId: ev.route.instanceId })
    } else if (mine.delete(ev.instanceId)) send({ type: 'remove', instanceId: ev.instanceId })
  }
}
