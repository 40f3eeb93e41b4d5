import type { FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify'
import type { DashboardContext } from './context.js'
import { formOf } from './context.js'
import { layout, messagePage } from './html.js'
import { loginRefusedPage } from './pages.js'

/**
 * The dashboard's `preHandler` guards. Each one admits the request's user (then `ctx.userOf(req)`
 * is that user in the handler) or answers the request itself, so a handler never runs without a
 * user. Guards that answer return the reply, which ends Fastify's hook chain.
 */
export interface Guards {
  /** A page: a signed-in user, else the login page (303), or why sign-in is off (403/404). */
  readonly page: preHandlerAsyncHookHandler
  /** An administrator's page: as `page`, then 403 for other users. */
  readonly adminPage: preHandlerAsyncHookHandler
  /** A form post: a signed-in user, a same-origin request and the right form token; else 401/403. */
  readonly post: preHandlerAsyncHookHandler
  /** An administrator's form post: as `post`, then 403 for other users. */
  readonly adminPost: preHandlerAsyncHookHandler
  /** The event stream: a signed-in user, else a plain-text 401 (the script is not a browser page). */
  readonly stream: preHandlerAsyncHookHandler
}

export function guards(ctx: DashboardContext): Guards {
  const page = async (req: FastifyRequest, reply: FastifyReply) => {
    if (!pageUser(ctx, req, reply)) return reply
  }
  const post = async (req: FastifyRequest, reply: FastifyReply) => {
    if (!postUser(ctx, req, reply)) return reply
  }
  return {
    page,
    post,
    adminPage: async (req, reply) => {
      const user = pageUser(ctx, req, reply)
      if (!user) return reply
      if (!user.admin) return forbidden(ctx, req, reply)
    },
    adminPost: async (req, reply) => {
      const user = postUser(ctx, req, reply)
      if (!user) return reply
      if (!user.admin) return forbidden(ctx, req, reply)
    },
    stream: async (req, reply) => {
      const user = ctx.currentUser(req)
      if (!user)
        return reply
          .code(401)
          .type('text/plain; charset=utf-8')
          .header('cache-control', 'no-store')
          .send('sign in first')
      ctx.admit(req, user)
    },
  }
}

/** 403 for a signed-in user who is not an administrator. */
export function forbidden(ctx: DashboardContext, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  return ctx.html(
    reply,
    403,
    messagePage(
      'Administrators only',
      'This page is for administrators of the pool. You are signed in without admin rights.',
      { viewer: ctx.viewerOf(req) },
    ),
  )
}

function pageUser(ctx: DashboardContext, req: FastifyRequest, reply: FastifyReply) {
  const user = ctx.currentUser(req)
  if (!user) {
    if (ctx.policy.refused) {
      void ctx.html(reply, 403, loginRefusedPage(ctx.policy))
      return undefined
    }
    if (ctx.login === 'off') {
      void ctx.html(
        reply,
        404,
        layout(
          `<section class="panel narrow"><h1>The dashboard is off</h1><p>This server runs with <code>dashboard.login: off</code>. The API is documented at <a href="/api/docs">/api/docs</a>.</p></section>`,
          { title: 'Dashboard off' },
        ),
      )
      return undefined
    }
    void reply.redirect(`/login?next=${encodeURIComponent(req.url)}`, 303)
    return undefined
  }
  if (user.fresh) void reply.header('set-cookie', ctx.kit.sessionCookie(user.cookie))
  ctx.admit(req, user)
  return user
}

function postUser(ctx: DashboardContext, req: FastifyRequest, reply: FastifyReply) {
  const user = ctx.currentUser(req)
  if (!user) {
    void ctx.html(
      reply,
      401,
      messagePage('Please sign in', 'Your session has ended. Sign in again, then repeat what you were doing.', {
        back: { href: '/login', label: 'Sign in' },
      }),
    )
    return undefined
  }
  if (!ctx.kit.sameOrigin(req) || !ctx.kit.checkCsrf(user.cookie, formOf(req).csrf)) {
    void ctx.html(
      reply,
      403,
      messagePage(
        'This form has expired',
        'The form was not sent from this dashboard, or it is too old. Reload the page and try again.',
        { viewer: ctx.viewerOf(req) },
      ),
    )
    return undefined
  }
  ctx.admit(req, user)
  return user
}
