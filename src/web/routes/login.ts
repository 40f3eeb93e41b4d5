import { randomBytes } from 'node:crypto'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { isUserId } from '../../domain/ids.js'
import { formOf, type DashboardContext } from '../context.js'
import type { Guards } from '../guards.js'
import { messagePage } from '../html.js'
import { devLoginPage, devOnlyLoopback, loginRefusedPage } from '../pages.js'
import { isLoopback, peerAddress } from '../session.js'

/** Query strings the login pages read: a value is used when it is one string, anything else is ignored. */
const LoginQuery = Type.Object({ next: Type.Optional(Type.Unknown()), user: Type.Optional(Type.Unknown()) })
const CallbackQuery = Type.Object({
  error: Type.Optional(Type.Unknown()),
  error_description: Type.Optional(Type.Unknown()),
})

/** Sign-in (dev, OIDC, trusted header), the OIDC callback, and sign-out. */
export const loginRoutes: FastifyPluginAsyncTypebox<{ ctx: DashboardContext; guard: Guards }> = async (
  app,
  { ctx, guard },
) => {
  const { kit, policy, login } = ctx

  app.get('/login', { schema: { hide: true, querystring: LoginQuery } }, async (req, reply) => {
    const next = kit.safeNext(req.query.next)
    switch (login) {
      case 'off':
        if (policy.refused) return ctx.html(reply, 403, loginRefusedPage(policy))
        return ctx.html(
          reply,
          404,
          messagePage('Sign-in is off', 'This server runs without a dashboard login (dashboard.login: off).', {
            back: { href: '/api/docs', label: 'API documentation' },
          }),
        )
      case 'header': {
        const id = ctx.headerIdentity(req)
        if (!id)
          return ctx.html(
            reply,
            403,
            messagePage(
              'Sign-in goes through the login proxy',
              'This request did not come through the trusted login proxy, so it cannot sign you in. Use the address your organisation gave you.',
              { back: { href: '/', label: 'Try again' } },
            ),
          )
        return ctx.finishLogin(reply, id, next)
      }
      case 'oidc':
        return beginOidc(ctx, req, reply, next)
      case 'dev': {
        if (!isLoopback(peerAddress(req))) return ctx.html(reply, 403, devOnlyLoopback())
        const nonce = randomBytes(16).toString('base64url')
        void reply.header('set-cookie', ctx.loginCookie(kit.seal({ n: nonce }, 3_600_000), 3600))
        const user = typeof req.query.user === 'string' ? req.query.user : ''
        return ctx.html(reply, 200, devLoginPage(next, kit.csrfFor(`login\0${nonce}`), user))
      }
    }
  })

  app.post('/login', { schema: { hide: true } }, async (req, reply) => devLogin(ctx, req, reply))

  app.get('/login/callback', { schema: { hide: true, querystring: CallbackQuery } }, async (req, reply) =>
    oidcCallback(ctx, req, reply, req.query),
  )

  // Signing out needs the form token too, so another site cannot sign users out.
  app.post('/logout', { schema: { hide: true }, preHandler: guard.post }, async (_req, reply) => {
    void reply.header('set-cookie', kit.clearSessionCookie())
    const note = login === 'header' ? ' Your organisation’s login proxy may sign you in again on your next visit.' : ''
    return ctx.html(
      reply,
      200,
      messagePage('Signed out', `You are signed out of studiopool.${note}`, {
        back: { href: '/login', label: 'Sign in again' },
      }),
    )
  })
}

/** OIDC: redirect to the identity provider, the state in a signed cookie; 503 when it does not answer. */
async function beginOidc(ctx: DashboardContext, req: FastifyRequest, reply: FastifyReply, next: string) {
  let begun
  try {
    begun = await ctx.oidc!.begin()
  } catch (err) {
    req.log.warn({ err: (err as Error).message }, 'dashboard: identity provider unreachable')
    return ctx.html(
      reply,
      503,
      messagePage('Sign-in is unavailable', 'The identity provider does not answer. Please try again in a minute.', {
        back: { href: `/login?next=${encodeURIComponent(next)}`, label: 'Try again' },
      }),
    )
  }
  return reply
    .header('set-cookie', ctx.loginCookie(ctx.kit.seal({ ...begun.pending, next }, 600_000), 600))
    .header('cache-control', 'no-store')
    .redirect(begun.url, 303)
}

/** The development login's form post: loopback only, a same-origin form with its token, a user name. */
async function devLogin(ctx: DashboardContext, req: FastifyRequest, reply: FastifyReply) {
  const { kit, policy, login } = ctx
  if (login !== 'dev' && policy.configured === 'dev' && policy.refused) {
    // A stable code for scripts, the same explanation for people.
    if (!String(req.headers.accept ?? '').includes('text/html')) {
      return reply
        .code(403)
        .header('cache-control', 'no-store')
        .send({ error: { code: 'LOGIN_DISABLED', message: `dev login is off: ${policy.refused.reason}` } })
    }
    return ctx.html(reply, 403, loginRefusedPage(policy))
  }
  if (login !== 'dev')
    return ctx.html(reply, 404, messagePage('Not here', 'This server does not use the development login.'))
  if (!isLoopback(peerAddress(req))) return ctx.html(reply, 403, devOnlyLoopback())
  const form = formOf(req)
  const st = ctx.readLoginState(req)
  if (!kit.sameOrigin(req) || typeof st?.n !== 'string' || !kit.checkCsrf(`login\0${st.n}`, form.csrf)) {
    return ctx.html(
      reply,
      403,
      messagePage('This form has expired', 'Reload the sign-in page and try again.', {
        back: { href: '/login', label: 'Sign in' },
      }),
    )
  }
  const userId = (form.user ?? '').trim()
  if (!isUserId(userId)) {
    return ctx.html(
      reply,
      400,
      devLoginPage(kit.safeNext(form.next), form.csrf!, '', 'Type a user name (1–200 characters).'),
    )
  }
  const groups = (form.groups ?? '')
    .split(/[,;\s]+/)
    .map((g) => g.trim())
    .filter((g) => g && g.length <= 200)
    .slice(0, 50)
  return ctx.finishLogin(reply, { userId, groups }, kit.safeNext(form.next))
}

/** The identity provider's redirect back: the state cookie, then the code exchange and the ID token. */
async function oidcCallback(
  ctx: DashboardContext,
  req: FastifyRequest,
  reply: FastifyReply,
  q: { error?: unknown; error_description?: unknown },
) {
  const { kit, login } = ctx
  const oidc = ctx.oidc
  if (login !== 'oidc' || !oidc)
    return ctx.html(reply, 404, messagePage('Not here', 'This server does not use OpenID Connect.'))
  const st = ctx.readLoginState(req)
  const again = { back: { href: '/login', label: 'Sign in again' } }
  if (typeof q.error === 'string') {
    return ctx.html(
      reply,
      403,
      messagePage(
        'Sign-in was refused',
        `The identity provider said: ${String(q.error_description ?? q.error).slice(0, 300)}`,
        again,
      ),
    )
  }
  if (!st || typeof st.state !== 'string' || typeof st.nonce !== 'string' || typeof st.verifier !== 'string') {
    return ctx.html(
      reply,
      400,
      messagePage(
        'Sign-in expired',
        'The sign-in took too long or was started in another browser. Please sign in again.',
        again,
      ),
    )
  }
  const query = req.url.includes('?') ? req.url.slice(req.url.indexOf('?')) : ''
  let identity
  try {
    identity = await oidc.finish(query, { state: st.state, nonce: st.nonce, verifier: st.verifier })
  } catch (err) {
    req.log.warn({ err: (err as Error).message }, 'dashboard: OIDC callback refused')
    return ctx.html(
      reply,
      403,
      messagePage(
        'Sign-in failed',
        'The answer of the identity provider could not be verified. Please sign in again.',
        again,
      ),
    )
  }
  return ctx.finishLogin(reply, identity, kit.safeNext(st.next))
}
