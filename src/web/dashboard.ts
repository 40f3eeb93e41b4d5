import { randomBytes } from 'node:crypto'
import type { FastifyError, FastifyInstance } from 'fastify'
import { isAppError } from '../domain/errors.js'
import { DashboardContext, type DashboardDeps, type Form } from './context.js'
import { guards } from './guards.js'
import { messagePage } from './html.js'
import { decideLogin } from './login-policy.js'
import { titleFor } from './pages.js'
import { adminRoutes } from './routes/admin.js'
import { assetRoutes } from './routes/assets.js'
import { eventRoutes } from './routes/events.js'
import { loginRoutes } from './routes/login.js'
import { userRoutes } from './routes/user.js'

export type { DashboardDeps } from './context.js'

const FORM_LIMIT = 16 * 1024

/**
 * The web dashboard (issue 4): server-rendered pages on the API's Fastify instance, one CSS and one
 * JS file under `/assets/`, and server-sent events for launch progress. Login (dev, OIDC, trusted
 * header) issues the gateway's own session cookie, so signing in here also opens the user's
 * sessions. Every form carries a token bound to that cookie; every POST also checks the browser's
 * Origin / Sec-Fetch-Site where present.
 *
 * One plugin per area (web/routes/{user,events,admin,login,assets}.ts) inside one scope that
 * parses forms and renders errors as pages; `preHandler` guards (web/guards.ts) admit the user.
 */
export async function registerDashboard(app: FastifyInstance, deps: DashboardDeps): Promise<void> {
  const secret =
    deps.config.gateway.secret ??
    (await deps.store.setMetaIfAbsent('gateway.secret', randomBytes(32).toString('base64url')))
  const ctx = new DashboardContext(deps, secret, deps.login ?? decideLogin(deps.config, []))
  const guard = guards(ctx)

  await app.register(async (scope) => {
    scope.addContentTypeParser(
      'application/x-www-form-urlencoded',
      { parseAs: 'string', bodyLimit: FORM_LIMIT },
      (_req, body, done) => {
        const form: Form = Object.create(null) as Form
        for (const [k, v] of new URLSearchParams(body as string)) if (!(k in form)) form[k] = v
        done(null, form)
      },
    )
    scope.setErrorHandler((err: FastifyError, req, reply) => {
      const viewer = ctx.viewerOf(req)
      if (isAppError(err)) {
        if (err.retryAfter) void reply.header('retry-after', String(err.retryAfter))
        if (err.statusCode >= 500) req.log.warn({ code: err.code, msg: err.message }, 'dashboard request failed')
        return ctx.html(reply, err.statusCode, messagePage(titleFor(err.statusCode), err.message, { viewer }))
      }
      const status = err.statusCode ?? 500
      if (status >= 400 && status < 500) {
        const tooLarge = status === 413
        const text = tooLarge ? 'The form is too large.' : 'The request could not be read.'
        return ctx.html(reply, tooLarge ? 413 : 400, messagePage('That did not work', text, { viewer }))
      }
      req.log.error({ err }, 'dashboard: unhandled error')
      const text = 'The server could not complete this request. Please try again.'
      return ctx.html(reply, 500, messagePage('Something went wrong', text, { viewer }))
    })

    await scope.register(assetRoutes)
    await scope.register(userRoutes, { ctx, guard })
    await scope.register(eventRoutes, { ctx, guard })
    await scope.register(adminRoutes, { ctx, guard })
    await scope.register(loginRoutes, { ctx, guard })
  })
}
