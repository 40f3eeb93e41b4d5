import { randomBytes } from 'node:crypto'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ApiDeps } from '../api/context.js'
import { historyCsv } from '../api/routes/rest.js'
import type { Config, TemplateConfig } from '../config/types.js'
import { isAppError } from '../domain/errors.js'
import { LIVE_STATES, type Instance } from '../domain/instance.js'
import { KEY_ROLES, type KeyRole } from '../domain/keys.js'
import type { RouteEntry, RouteSource } from '../domain/routes.js'
import type { TokenService } from '../gateway/tokens.js'
import type { HistoryFilter } from '../store/store.js'
import { renderAdminView, type HistoryFilters } from './admin-view.js'
import { ASSETS } from './assets.js'
import { stateChart } from './chart.js'
import { csrfField, esc, layout, messagePage, type Viewer } from './html.js'
import { decideLogin, type LoginPolicy } from './login-policy.js'
import { OidcLogin } from './oidc.js'
import { isInstanceId } from '../domain/ids.js'
import { addressMatcher, isLoopback, peerAddress, SessionKit, type DashboardUser } from './session.js'
import { renderUserView } from './user-view.js'

export interface DashboardDeps extends ApiDeps {
  /** Issues the same session cookie the gateway's launch links give. */
  readonly tokens: TokenService
  /** Live route changes (progress, state) for server-sent events. */
  readonly routes: RouteSource
  /** The login offered (web/login-policy.ts, decided at start); default: `dashboard.login` with no provider reports. */
  readonly login?: LoginPolicy
}

type Form = Record<string, string>

const DAY_MS = 86_400_000
const HISTORY_PAGE = 200
const FORM_LIMIT = 16 * 1024
const TEMPLATE_RE = /^[a-z][a-z0-9-]{0,62}$/
const KEY_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/
const DATE_RE = /^\d{4}-\d{2}-\d{2}$/

const USER_NOTICES: Record<string, string> = {
  stopped: 'The session was stopped.',
  launched: 'Your session is being prepared.',
}
const ADMIN_NOTICES: Record<string, string> = {
  deleted: 'The instance was deleted and its session ended.',
  restarted: 'The instance is restarting under the same address.',
  stopped: 'The instance was stopped; its disk is kept.',
  resumed: 'The instance is resuming.',
  revoked: 'The key was revoked.',
}

/**
 * The web dashboard (issue 4): server-rendered pages on the API's Fastify instance, one CSS and one
 * JS file under `/assets/`, and server-sent events for launch progress. Login (dev, OIDC, trusted
 * header) issues the gateway's own session cookie, so signing in here also opens the user's
 * sessions. Every form carries a token bound to that cookie; every POST also checks the browser's
 * Origin / Sec-Fetch-Site where present.
 */
export async function registerDashboard(app: FastifyInstance, deps: DashboardDeps): Promise<void> {
  const { config } = deps
  const secret =
    config.gateway.secret ?? (await deps.store.setMetaIfAbsent('gateway.secret', randomBytes(32).toString('base64url')))
  const kit = new SessionKit({ tokens: deps.tokens, secret, config })
  const dash = config.dashboard
  const policy = deps.login ?? decideLogin(config, [])
  // The login actually offered: `off` when the configured one was refused at start.
  const login = policy.effective
  const publicBase = config.server.publicUrl.replace(/\/+$/, '')
  const oidc = login === 'oidc' && dash.oidc ? new OidcLogin(dash.oidc, `${publicBase}/login/callback`) : undefined
  const trustedProxy = addressMatcher(dash.header?.trustedProxies ?? [])
  const stateCookieName = `${kit.cookieName}_login`
  const csp = cspHeader(config)

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
      const viewer = viewerOf(req)
      if (isAppError(err)) {
        if (err.retryAfter) void reply.header('retry-after', String(err.retryAfter))
        if (err.statusCode >= 500) req.log.warn({ code: err.code, msg: err.message }, 'dashboard request failed')
        return html(reply, err.statusCode, messagePage(titleFor(err.statusCode), err.message, { viewer }))
      }
      const status = err.statusCode ?? 500
      if (status >= 400 && status < 500)
        return html(
          reply,
          status === 413 ? 413 : 400,
          messagePage(
            'That did not work',
            status === 413 ? 'The form is too large.' : 'The request could not be read.',
            { viewer },
          ),
        )
      req.log.error({ err }, 'dashboard: unhandled error')
      return html(
        reply,
        500,
        messagePage('Something went wrong', 'The server could not complete this request. Please try again.', {
          viewer,
        }),
      )
    })

    // ---- helpers -------------------------------------------------------------------------------
    const viewers = new WeakMap<FastifyRequest, Viewer>()
    function viewerOf(req: FastifyRequest): Viewer | undefined {
      return viewers.get(req)
    }

    function html(reply: FastifyReply, status: number, body: string): FastifyReply {
      return reply
        .code(status)
        .type('text/html; charset=utf-8')
        .header('cache-control', 'no-store')
        .header('content-security-policy', csp)
        .header('x-frame-options', 'DENY')
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'same-origin')
        .send(body)
    }

    function headerIdentity(req: FastifyRequest): { userId: string; groups: string[] } | undefined {
      const h = dash.header
      if (login !== 'header' || !h || !trustedProxy(peerAddress(req))) return undefined
      const user = req.headers[h.userHeader]
      if (typeof user !== 'string' || !user.trim() || user.length > 200 || /[\u0000-\u001f\u007f]/.test(user))
        return undefined
      const g = req.headers[h.groupsHeader]
      const groups =
        typeof g === 'string'
          ? g
              .split(/[,;]/)
              .map((s) => s.trim())
              .filter((s) => s && s.length <= 200)
              .slice(0, 200)
          : []
      return { userId: user.trim(), groups }
    }

    const isAdmin = (userId: string, groups: readonly string[]) =>
      dash.admins.includes(userId) || groups.some((g) => dash.adminGroups.includes(g))

    /** The signed-in user: the session cookie, or (header mode) the trusted proxy's header. */
    function currentUser(req: FastifyRequest): DashboardUser | undefined {
      if (login === 'off') return undefined
      // A cookie from a launch link is scoped to one requester's sessions (gateway/tokens.ts): it is not
      // a dashboard login, which would list and open every session of the user.
      const read = kit.read(req)
      const s = read && read.claims.requesters === undefined ? read : undefined
      const fromHeader = headerIdentity(req)
      let user: DashboardUser | undefined
      if (fromHeader) {
        const same = s && s.claims.userId === fromHeader.userId && sameList(s.claims.groups, fromHeader.groups)
        if (same)
          user = {
            userId: s.claims.userId,
            admin: s.claims.admin,
            groups: s.claims.groups,
            cookie: s.value,
            fresh: false,
          }
        else {
          const admin = isAdmin(fromHeader.userId, fromHeader.groups)
          const cookie = kit.issue({ userId: fromHeader.userId, admin, groups: fromHeader.groups })
          user = { ...fromHeader, admin, cookie, fresh: true }
        }
      } else if (s) {
        user = {
          userId: s.claims.userId,
          admin: s.claims.admin,
          groups: s.claims.groups,
          cookie: s.value,
          fresh: false,
        }
      }
      if (user) viewers.set(req, { userId: user.userId, admin: user.admin, csrf: kit.csrfFor(user.cookie) })
      return user
    }

    /** A page that needs a user: the user, or a redirect to the login page (already sent). */
    function pageUser(req: FastifyRequest, reply: FastifyReply): DashboardUser | undefined {
      const user = currentUser(req)
      if (!user) {
        if (policy.refused) {
          void html(reply, 403, loginRefusedPage(policy))
          return undefined
        }
        if (login === 'off') {
          void html(
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
      if (user.fresh) void reply.header('set-cookie', kit.sessionCookie(user.cookie))
      return user
    }

    /** A form post: a user, a same-origin request and the right form token; otherwise a 403 page (sent). */
    function postUser(req: FastifyRequest, reply: FastifyReply): DashboardUser | undefined {
      const user = currentUser(req)
      if (!user) {
        void html(
          reply,
          401,
          messagePage('Please sign in', 'Your session has ended. Sign in again, then repeat what you were doing.', {
            back: { href: '/login', label: 'Sign in' },
          }),
        )
        return undefined
      }
      const form = formOf(req)
      if (!kit.sameOrigin(req) || !kit.checkCsrf(user.cookie, form.csrf)) {
        void html(
          reply,
          403,
          messagePage(
            'This form has expired',
            'The form was not sent from this dashboard, or it is too old. Reload the page and try again.',
            { viewer: viewerOf(req) },
          ),
        )
        return undefined
      }
      return user
    }

    function adminPost(req: FastifyRequest, reply: FastifyReply): DashboardUser | undefined {
      const user = postUser(req, reply)
      if (user && !user.admin) {
        void forbidden(req, reply)
        return undefined
      }
      return user
    }

    const forbidden = (req: FastifyRequest, reply: FastifyReply) =>
      html(
        reply,
        403,
        messagePage(
          'Administrators only',
          'This page is for administrators of the pool. You are signed in without admin rights.',
          { viewer: viewerOf(req) },
        ),
      )

    const mayUse = (t: TemplateConfig, u: { groups: readonly string[] }) =>
      t.allowedGroups.length === 0 || t.allowedGroups.some((g) => u.groups.includes(g))
    const actor = (u: DashboardUser) => `dashboard:${u.userId}`

    // ---- assets --------------------------------------------------------------------------------
    for (const a of [ASSETS.css, ASSETS.js]) {
      scope.get(a.path, { schema: { hide: true } }, async (req, reply) => {
        void reply
          .header('cache-control', 'public, max-age=31536000, immutable')
          .header('etag', a.etag)
          .header('x-content-type-options', 'nosniff')
        if (req.headers['if-none-match'] === a.etag) return reply.code(304).send()
        return reply.type(a.type).send(a.body)
      })
    }

    // ---- user view -----------------------------------------------------------------------------
    scope.get('/', { schema: { hide: true } }, async (req, reply) => {
      const user = pageUser(req, reply)
      if (!user) return reply
      const now = Date.now()
      const [live, history] = await Promise.all([
        deps.store.listInstances({ ownerId: user.userId, states: LIVE_STATES }),
        deps.store.listHistory({ userId: user.userId, limit: 50 }),
      ])
      const cards = await Promise.all(
        config.templates
          .filter((t) => mayUse(t, user) || live.some((i) => i.template === t.name))
          .map(async (t) => {
            const instance = live.find((i) => i.template === t.name)
            return {
              template: t,
              unavailable: deps.pool.unavailableReason(t.name),
              instance,
              queuePosition: instance?.state === 'queued' ? await deps.store.queuePosition(instance.id) : null,
              // Through /open/<id>: in subdomain mode the session's own host needs a launch token to set its cookie.
              sessionUrl: instance ? `/open/${instance.id}` : undefined,
            }
          }),
      )
      const done =
        typeof (req.query as Record<string, unknown>).done === 'string'
          ? USER_NOTICES[(req.query as Record<string, string>).done!]
          : undefined
      return html(
        reply,
        200,
        renderUserView({ viewer: viewerOf(req)!, cards, history, now, notice: done ? { text: done } : undefined }),
      )
    })

    // Open a session: a fresh single-use launch link for the owner (works in path and subdomain mode alike).
    scope.get('/open/:id', { schema: { hide: true } }, async (req, reply) => {
      const user = pageUser(req, reply)
      if (!user) return reply
      const id = (req.params as { id: string }).id
      const inst = isInstanceId(id) ? await deps.store.getInstance(id) : undefined
      if (!inst || inst.ownerId !== user.userId || !LIVE_STATES.includes(inst.state as never)) {
        return html(
          reply,
          404,
          messagePage('No such session', 'This session has ended or is not yours.', { viewer: viewerOf(req) }),
        )
      }
      return reply.redirect(await deps.links.launchUrl(inst.id, user.userId, inst.keyName), 303)
    })

    scope.post('/launch', { schema: { hide: true } }, async (req, reply) => {
      const user = postUser(req, reply)
      if (!user) return reply
      const name = formOf(req).template ?? ''
      const t = TEMPLATE_RE.test(name) ? config.templates.find((x) => x.name === name) : undefined
      if (!t)
        return html(
          reply,
          404,
          messagePage('No such template', 'That template does not exist (any more).', { viewer: viewerOf(req) }),
        )
      if (!mayUse(t, user))
        return html(
          reply,
          403,
          messagePage(
            'Not allowed',
            `You may not use the template “${t.displayName}”. Ask an administrator to add you to one of its groups.`,
            { viewer: viewerOf(req) },
          ),
        )
      await deps.pool.request({ userId: user.userId, template: t.name, keyName: 'dashboard', byOwner: true })
      return reply.redirect(`/?done=launched#t-${t.name}`, 303)
    })

    scope.post('/sessions/:id/stop', { schema: { hide: true } }, async (req, reply) => {
      const user = postUser(req, reply)
      if (!user) return reply
      const { id } = req.params as { id: string }
      const inst = isInstanceId(id) ? await deps.store.getInstance(id) : undefined
      if (!inst)
        return html(
          reply,
          404,
          messagePage('No such session', 'This session does not exist or has ended.', { viewer: viewerOf(req) }),
        )
      if (inst.ownerId !== user.userId)
        return html(
          reply,
          403,
          messagePage('Not your session', 'You can stop only your own sessions.', { viewer: viewerOf(req) }),
        )
      await deps.pool.release(id, 'user', actor(user))
      return reply.redirect('/?done=stopped', 303)
    })

    // Live progress of the user's own instances, as server-sent events.
    scope.get('/events', { schema: { hide: true } }, async (req, reply) => {
      const user = currentUser(req)
      if (!user)
        return reply
          .code(401)
          .type('text/plain; charset=utf-8')
          .header('cache-control', 'no-store')
          .send('sign in first')
      reply.hijack()
      const res = reply.raw
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        'x-accel-buffering': 'no',
        'x-content-type-options': 'nosniff',
      })
      res.write('retry: 3000\n\n')
      const view = (r: RouteEntry) => ({
        id: r.instanceId,
        template: r.template,
        state: r.state,
        progress: r.progress,
        message: r.progressMessage,
        queuePosition: r.queuePosition,
      })
      const send = (obj: unknown) => {
        if (!res.writableEnded) res.write(`data: ${JSON.stringify(obj)}\n\n`)
      }
      const mine = new Set<string>()
      let closed = false
      const unsubscribe = deps.routes.subscribe((ev) => {
        if (ev.type === 'reset') {
          const list = ev.routes.filter((r) => r.ownerId === user.userId)
          for (const id of mine) if (!list.some((r) => r.instanceId === id)) send({ type: 'remove', instanceId: id })
          mine.clear()
          for (const r of list) mine.add(r.instanceId)
          send({ type: 'reset', instances: list.map(view) })
        } else if (ev.type === 'upsert') {
          if (ev.route.ownerId === user.userId) {
            mine.add(ev.route.instanceId)
            send({ type: 'upsert', instances: [view(ev.route)] })
          } else if (mine.delete(ev.route.instanceId)) send({ type: 'remove', instanceId: ev.route.instanceId })
        } else if (mine.delete(ev.instanceId)) send({ type: 'remove', instanceId: ev.instanceId })
      })
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

    // ---- admin view ----------------------------------------------------------------------------
    function filtersOf(q: Record<string, unknown>): { filters: HistoryFilters; store: HistoryFilter } {
      const s = (k: string) => (typeof q[k] === 'string' ? (q[k] as string).trim() : '')
      const user = s('user').slice(0, 200)
      const template = config.templates.some((t) => t.name === s('template')) ? s('template') : ''
      const from = DATE_RE.test(s('from')) && Number.isFinite(Date.parse(s('from'))) ? s('from') : ''
      const to = DATE_RE.test(s('to')) && Number.isFinite(Date.parse(s('to'))) ? s('to') : ''
      return {
        filters: { user, template, from, to },
        store: {
          ...(user ? { userId: user } : {}),
          ...(template ? { template } : {}),
          ...(from ? { from: Date.parse(`${from}T00:00:00Z`) } : {}),
          ...(to ? { to: Date.parse(`${to}T00:00:00Z`) + DAY_MS } : {}),
        },
      }
    }

    async function adminPage(
      req: FastifyRequest,
      reply: FastifyReply,
      user: DashboardUser,
      extra: {
        status?: number
        notice?: { text: string; error?: boolean }
        createdKey?: { name: string; role: KeyRole; secret: string }
      } = {},
    ) {
      const now = Date.now()
      const q = req.query as Record<string, unknown>
      const { filters, store: hf } = filtersOf(extra.createdKey ? {} : q)
      const [counts, active, instances, queue, samples, history, keys] = await Promise.all([
        deps.store.countByState(),
        deps.store.countActive(),
        deps.store.listInstances({ states: [...LIVE_STATES, 'stopping'], limit: 1000 }),
        deps.store.listQueued(undefined, 500),
        deps.store.listStateSamples(now - DAY_MS, now),
        deps.store.listHistory({ ...hf, limit: HISTORY_PAGE }),
        deps.keyring.list(),
      ])
      const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v) as [string, string][])
      const done = typeof q.done === 'string' ? ADMIN_NOTICES[q.done] : undefined
      const suspendable = new Set(
        config.templates.filter((t) => deps.providers.get(t.provider)?.capabilities.supportsSuspend).map((t) => t.name),
      )
      return html(
        reply,
        extra.status ?? 200,
        renderAdminView({
          viewer: viewerOf(req)!,
          now,
          templates: config.templates.map((t) => ({
            template: t,
            counts: Object.fromEntries(counts.filter((c) => c.template === t.name).map((c) => [c.state, c.count])),
            unavailable: deps.pool.unavailableReason(t.name),
          })),
          poolMax: config.pool.maxInstances,
          isolation: deps.pool.isolation(),
          active: active.total,
          instances: instances.sort(byNewest),
          suspendable,
          queue,
          chart: stateChart(samples, now - DAY_MS, now),
          history,
          historyLimit: HISTORY_PAGE,
          filters,
          csvHref: `/admin/history.csv${params.size ? `?${params}` : ''}`,
          keys,
          notice: extra.notice ?? (done ? { text: done } : undefined),
          createdKey: extra.createdKey,
          sessionUrl: (id) => deps.links.sessionUrl(id),
        }),
      )
    }

    scope.get('/admin', { schema: { hide: true } }, async (req, reply) => {
      const user = pageUser(req, reply)
      if (!user) return reply
      if (!user.admin) return forbidden(req, reply)
      return adminPage(req, reply, user)
    })

    // The same CSV as GET /api/v1/history?format=csv, authorized by the admin's cookie instead of a key.
    scope.get('/admin/history.csv', { schema: { hide: true } }, async (req, reply) => {
      const user = pageUser(req, reply)
      if (!user) return reply
      if (!user.admin) return forbidden(req, reply)
      const { store: hf } = filtersOf(req.query as Record<string, unknown>)
      const rows = await deps.store.listHistory({ ...hf, limit: 10_000 })
      return reply
        .type('text/csv; charset=utf-8')
        .header('cache-control', 'no-store')
        .header('x-content-type-options', 'nosniff')
        .header('content-disposition', 'attachment; filename="studiopool-history.csv"')
        .send(historyCsv(rows))
    })

    scope.post('/admin/instances/:id/:action', { schema: { hide: true } }, async (req, reply) => {
      const user = adminPost(req, reply)
      if (!user) return reply
      const { id, action } = req.params as { id: string; action: string }
      if (!isInstanceId(id) || !['stop', 'resume', 'restart', 'delete'].includes(action))
        return html(
          reply,
          404,
          messagePage('Not found', 'There is no such instance or action.', { viewer: viewerOf(req) }),
        )
      const inst = await deps.store.getInstance(id)
      if (!inst)
        return html(
          reply,
          404,
          messagePage('No such instance', 'This instance does not exist (any more).', { viewer: viewerOf(req) }),
        )
      const by = actor(user)
      if (action === 'delete') await deps.pool.release(id, 'admin', by)
      else if (action === 'restart') await deps.pool.restart(id, by)
      else if (action === 'stop') await deps.pool.suspend(id, by)
      else await deps.pool.resume(id, by)
      const done = { delete: 'deleted', restart: 'restarted', stop: 'stopped', resume: 'resumed' }[action as 'delete']
      return reply.redirect(`/admin?done=${done}#h-inst`, 303)
    })

    scope.post('/admin/keys', { schema: { hide: true } }, async (req, reply) => {
      const user = adminPost(req, reply)
      if (!user) return reply
      const form = formOf(req)
      const name = (form.name ?? '').trim()
      const role = form.role as KeyRole
      if (!KEY_NAME_RE.test(name) || !(KEY_ROLES as readonly string[]).includes(role)) {
        return adminPage(req, reply, user, {
          status: 400,
          notice: {
            text: 'A key needs a name of 1–64 letters, digits, dots, dashes or underscores, and a role.',
            error: true,
          },
        })
      }
      let created
      try {
        created = await deps.keyring.create(name, role)
      } catch (err) {
        if (isAppError(err) && err.code === 'CONFLICT')
          return adminPage(req, reply, user, { status: 409, notice: { text: err.message, error: true } })
        throw err
      }
      await deps.pool.audit(null, 'key-created', actor(user), { name, role, id: created.key.id })
      return adminPage(req, reply, user, { status: 201, createdKey: { name, role, secret: created.secret } })
    })

    scope.post('/admin/keys/:id/revoke', { schema: { hide: true } }, async (req, reply) => {
      const user = adminPost(req, reply)
      if (!user) return reply
      const { id } = req.params as { id: string }
      if (!/^[a-z2-7]{12}$/.test(id) || !(await deps.keyring.revoke(id)))
        return html(
          reply,
          404,
          messagePage('No such key', 'This key does not exist or is already revoked.', { viewer: viewerOf(req) }),
        )
      await deps.pool.audit(null, 'key-revoked', actor(user), { id })
      return reply.redirect('/admin?done=revoked#h-keys', 303)
    })

    // ---- login ---------------------------------------------------------------------------------
    const loginCookie = (value: string, maxAge: number) => kit.stateCookie(stateCookieName, value, '/login', maxAge)
    const readLoginState = (req: FastifyRequest) => {
      const header = req.headers.cookie ?? ''
      for (const part of header.split(';')) {
        const t = part.trim()
        if (t.startsWith(stateCookieName + '=')) return kit.unseal(t.slice(stateCookieName.length + 1))
      }
      return undefined
    }
    const finishLogin = (
      reply: FastifyReply,
      identity: { userId: string; groups: readonly string[] },
      next: string,
    ) => {
      const admin = isAdmin(identity.userId, identity.groups)
      const cookie = kit.issue({ userId: identity.userId, admin, groups: identity.groups })
      return reply.header('set-cookie', [kit.sessionCookie(cookie), loginCookie('', 0)]).redirect(next, 303)
    }

    scope.get('/login', { schema: { hide: true } }, async (req, reply) => {
      const q = req.query as Record<string, unknown>
      const next = kit.safeNext(q.next)
      switch (login) {
        case 'off':
          if (policy.refused) return html(reply, 403, loginRefusedPage(policy))
          return html(
            reply,
            404,
            messagePage('Sign-in is off', 'This server runs without a dashboard login (dashboard.login: off).', {
              back: { href: '/api/docs', label: 'API documentation' },
            }),
          )
        case 'header': {
          const id = headerIdentity(req)
          if (!id)
            return html(
              reply,
              403,
              messagePage(
                'Sign-in goes through the login proxy',
                'This request did not come through the trusted login proxy, so it cannot sign you in. Use the address your organisation gave you.',
                { back: { href: '/', label: 'Try again' } },
              ),
            )
          return finishLogin(reply, id, next)
        }
        case 'oidc': {
          let begun
          try {
            begun = await oidc!.begin()
          } catch (err) {
            req.log.warn({ err: (err as Error).message }, 'dashboard: identity provider unreachable')
            return html(
              reply,
              503,
              messagePage(
                'Sign-in is unavailable',
                'The identity provider does not answer. Please try again in a minute.',
                { back: { href: `/login?next=${encodeURIComponent(next)}`, label: 'Try again' } },
              ),
            )
          }
          return reply
            .header('set-cookie', loginCookie(kit.seal({ ...begun.pending, next }, 600_000), 600))
            .header('cache-control', 'no-store')
            .redirect(begun.url, 303)
        }
        case 'dev': {
          if (!isLoopback(peerAddress(req))) return html(reply, 403, devOnlyLoopback())
          const nonce = randomBytes(16).toString('base64url')
          void reply.header('set-cookie', loginCookie(kit.seal({ n: nonce }, 3_600_000), 3600))
          return html(
            reply,
            200,
            devLoginPage(next, kit.csrfFor(`login\0${nonce}`), typeof q.user === 'string' ? q.user : ''),
          )
        }
      }
    })

    scope.post('/login', { schema: { hide: true } }, async (req, reply) => {
      if (login !== 'dev' && policy.configured === 'dev' && policy.refused) {
        // A stable code for scripts, the same explanation for people.
        if (!String(req.headers.accept ?? '').includes('text/html')) {
          return reply
            .code(403)
            .header('cache-control', 'no-store')
            .send({ error: { code: 'LOGIN_DISABLED', message: `dev login is off: ${policy.refused.reason}` } })
        }
        return html(reply, 403, loginRefusedPage(policy))
      }
      if (login !== 'dev')
        return html(reply, 404, messagePage('Not here', 'This server does not use the development login.'))
      if (!isLoopback(peerAddress(req))) return html(reply, 403, devOnlyLoopback())
      const form = formOf(req)
      const st = readLoginState(req)
      if (!kit.sameOrigin(req) || typeof st?.n !== 'string' || !kit.checkCsrf(`login\0${st.n}`, form.csrf)) {
        return html(
          reply,
          403,
          messagePage('This form has expired', 'Reload the sign-in page and try again.', {
            back: { href: '/login', label: 'Sign in' },
          }),
        )
      }
      const userId = (form.user ?? '').trim()
      if (!userId || userId.length > 200 || /[\u0000-\u001f\u007f]/.test(userId)) {
        return html(
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
      return finishLogin(reply, { userId, groups }, kit.safeNext(form.next))
    })

    scope.get('/login/callback', { schema: { hide: true } }, async (req, reply) => {
      if (login !== 'oidc' || !oidc)
        return html(reply, 404, messagePage('Not here', 'This server does not use OpenID Connect.'))
      const st = readLoginState(req)
      const q = req.query as Record<string, unknown>
      const again = { back: { href: '/login', label: 'Sign in again' } }
      if (typeof q.error === 'string') {
        return html(
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
        return html(
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
        return html(
          reply,
          403,
          messagePage(
            'Sign-in failed',
            'The answer of the identity provider could not be verified. Please sign in again.',
            again,
          ),
        )
      }
      return finishLogin(reply, identity, kit.safeNext(st.next))
    })

    scope.post('/logout', { schema: { hide: true } }, async (req, reply) => {
      // Signing out needs the form token too, so another site cannot sign users out.
      const user = postUser(req, reply)
      if (!user) return reply
      void reply.header('set-cookie', kit.clearSessionCookie())
      const note =
        login === 'header' ? ' Your organisation’s login proxy may sign you in again on your next visit.' : ''
      return html(
        reply,
        200,
        messagePage('Signed out', `You are signed out of studiopool.${note}`, {
          back: { href: '/login', label: 'Sign in again' },
        }),
      )
    })
  })
}

function formOf(req: FastifyRequest): Form {
  const b = req.body
  return b && typeof b === 'object' && !Array.isArray(b) ? (b as Form) : ({} as Form)
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function byNewest(a: Instance, b: Instance): number {
  return b.createdAt - a.createdAt
}

function titleFor(status: number): string {
  if (status === 400) return 'That did not work'
  if (status === 403) return 'Not allowed'
  if (status === 404) return 'Not found'
  if (status === 409) return 'Not possible right now'
  if (status === 503) return 'Please try again later'
  return 'Something went wrong'
}

function cspHeader(config: Config): string {
  const sub =
    config.gateway.mode === 'subdomain' && config.gateway.sessionDomain ? ` *.${config.gateway.sessionDomain}` : ''
  return `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'${sub}; frame-ancestors 'none'; base-uri 'none'`
}

/** Why the configured login is off (the same words as the start-up warning), with the code for scripts. */
function loginRefusedPage(policy: LoginPolicy): string {
  const r = policy.refused!
  return layout(
    `<section class="panel narrow" aria-labelledby="h-off"><h1 id="h-off">Sign-in is turned off</h1>` +
      `<p>This server is configured with <code>dashboard.login: ${esc(policy.configured)}</code>, but ${esc(r.reason)}. So it does not sign anyone in.</p>` +
      `<p>What the operator can do: ${esc(r.fix)}. See docs/security.md, “Logins”.</p>` +
      `<p class="muted">Error code <code>LOGIN_DISABLED</code>. Session links handed out by applications still work.</p></section>`,
    { title: 'Sign-in is off' },
  )
}

function devOnlyLoopback(): string {
  return messagePage(
    'Development sign-in works only on this machine',
    'dashboard.login is "dev": anyone could claim any name, so it answers only requests from 127.0.0.1 or ::1. Configure oidc or header login for other users.',
    { back: { href: '/', label: 'Back' } },
  )
}

function devLoginPage(next: string, csrf: string, user: string, error?: string): string {
  const err = error ? `<p class="notice error" role="alert">${esc(error)}</p>` : ''
  return layout(
    `<section class="panel narrow login" aria-labelledby="h-login"><h1 id="h-login">Sign in</h1>${err}` +
      `<p class="muted">Development sign-in: type any name. It is offered only to this machine (loopback).</p>` +
      `<form method="post" action="/login">${csrfField(csrf)}<input type="hidden" name="next" value="${esc(next)}">` +
      `<div class="field"><label for="user">User name</label><input type="text" id="user" name="user" required maxlength="200" autocomplete="username" autofocus value="${esc(user)}"></div>` +
      `<div class="field"><label for="groups">Groups (optional, comma-separated)</label><input type="text" id="groups" name="groups" maxlength="1000" autocomplete="off"></div>` +
      `<button class="btn" type="submit">Sign in</button></form></section>`,
    { title: 'Sign in' },
  )
}
