import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { isInstanceId, isTemplateName } from '../../domain/ids.js'
import { LIVE_STATES } from '../../domain/instance.js'
import { formOf, type DashboardContext } from '../context.js'
import type { Guards } from '../guards.js'
import { messagePage } from '../html.js'
import { renderUserView } from '../user-view.js'
import { renderUserSpend } from '../cost-view.js'

const USER_NOTICES: Record<string, string> = {
  stopped: 'The session was stopped.',
  kept: 'Noted: you are still working. The idle timer starts again.',
  suspended: 'The session was suspended: its disk is kept. Resume it here when you need it again.',
  resumed: 'The session is resuming.',
  launched: 'Your session is being prepared.',
}

/** Query strings the pages read: a value is used when it is one string, anything else is ignored. */
const NoticeQuery = Type.Object({ done: Type.Optional(Type.Unknown()) })
const IdParam = Type.Object({ id: Type.String() })

/** The user's own view: their sessions and templates, open, launch and stop. */
export const userRoutes: FastifyPluginAsyncTypebox<{ ctx: DashboardContext; guard: Guards }> = async (
  app,
  { ctx, guard },
) => {
  const { deps, config } = ctx

  app.get('/', { schema: { hide: true, querystring: NoticeQuery }, preHandler: guard.page }, async (req, reply) =>
    userHome(ctx, req, reply, req.query),
  )

  // Open a session: a fresh single-use launch link for the owner (works in path and subdomain mode alike).
  app.get('/open/:id', { schema: { hide: true, params: IdParam }, preHandler: guard.page }, async (req, reply) => {
    const user = ctx.userOf(req)
    const { id } = req.params
    const inst = isInstanceId(id) ? await deps.store.getInstance(id) : undefined
    if (!inst || inst.ownerId !== user.userId || !LIVE_STATES.includes(inst.state as never)) {
      return ctx.html(
        reply,
        404,
        messagePage('No such session', 'This session has ended or is not yours.', { viewer: ctx.viewerOf(req) }),
      )
    }
    return reply.redirect(await deps.links.launchUrl(inst.id, user.userId, inst.keyName), 303)
  })

  app.post('/launch', { schema: { hide: true }, preHandler: guard.post }, async (req, reply) => {
    const user = ctx.userOf(req)
    const name = formOf(req).template ?? ''
    const t = isTemplateName(name) ? config.templates.find((x) => x.name === name) : undefined
    if (!t)
      return ctx.html(
        reply,
        404,
        messagePage('No such template', 'That template does not exist (any more).', { viewer: ctx.viewerOf(req) }),
      )
    if (!ctx.mayUse(t, user))
      return ctx.html(
        reply,
        403,
        messagePage(
          'Not allowed',
          `You may not use the template “${t.displayName}”. Ask an administrator to add you to one of its groups.`,
          { viewer: ctx.viewerOf(req) },
        ),
      )
    await deps.pool.request({ userId: user.userId, template: t.name, keyName: 'dashboard', byOwner: true })
    return reply.redirect(`/?done=launched#t-${t.name}`, 303)
  })

  // Stop, and the warning's "Keep working" and "Suspend" (issue 13), and Resume: the owner's own sessions only.
  for (const action of ['stop', 'keep', 'suspend', 'resume'] as const) {
    app.post(
      `/sessions/:id/${action}`,
      { schema: { hide: true, params: IdParam }, preHandler: guard.post },
      async (req, reply) => {
        const user = ctx.userOf(req)
        const { id } = req.params
        const inst = isInstanceId(id) ? await deps.store.getInstance(id) : undefined
        if (!inst)
          return ctx.html(
            reply,
            404,
            messagePage('No such session', 'This session does not exist or has ended.', { viewer: ctx.viewerOf(req) }),
          )
        if (inst.ownerId !== user.userId)
          return ctx.html(
            reply,
            403,
            messagePage('Not your session', 'You can act only on your own sessions.', { viewer: ctx.viewerOf(req) }),
          )
        if (action === 'stop') await deps.pool.release(id, 'user', ctx.actor(user))
        else if (action === 'keep') await deps.pool.keepWorking(id)
        else if (action === 'suspend') await deps.pool.suspend(id, ctx.actor(user))
        else await deps.pool.resume(id, ctx.actor(user))
        const done = ({ stop: 'stopped', keep: 'kept', suspend: 'suspended', resume: 'resumed' } as const)[action]
        return reply.redirect(`/?done=${done}#t-${inst.template}`, 303)
      },
    )
  }
}

/** The user's page: a card per template they may use (or have a session of), and their recent history. */
async function userHome(ctx: DashboardContext, req: FastifyRequest, reply: FastifyReply, q: { done?: unknown }) {
  const { deps, config } = ctx
  const user = ctx.userOf(req)
  const now = Date.now()
  const [live, history] = await Promise.all([
    deps.store.listInstances({ ownerId: user.userId, states: LIVE_STATES }),
    deps.store.listHistory({ userId: user.userId, limit: 50 }),
  ])
  const cards = await Promise.all(
    config.templates
      .filter((t) => ctx.mayUse(t, user) || live.some((i) => i.template === t.name))
      .map(async (t) => {
        const instance = live.find((i) => i.template === t.name)
        return {
          // The same warning as the session's banner (domain/pending-stop.ts), computed by the pool.
          stop: instance ? await deps.pool.pendingStops.status(instance, now) : undefined,
          template: t,
          unavailable: deps.pool.unavailableReason(t.name),
          instance,
          queuePosition: instance?.state === 'queued' ? await deps.store.queuePosition(instance.id) : null,
          // Through /open/<id>: in subdomain mode the session's own host needs a launch token to set its cookie.
          sessionUrl: instance ? `/open/${instance.id}` : undefined,
        }
      }),
  )
  const done = typeof q.done === 'string' ? USER_NOTICES[q.done] : undefined
  const d = new Date(now)
  const usage = await deps.pool.cost.usage(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1), now, {
    userId: user.userId,
  })
  const spend = renderUserSpend(usage, usage.budgets)
  return ctx.html(
    reply,
    200,
    renderUserView({ viewer: ctx.viewer(req), cards, history, now, notice: done ? { text: done } : undefined, spend }),
  )
}
