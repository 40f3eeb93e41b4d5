import type { FastifyReply, FastifyRequest } from 'fastify'
import type { ApiDeps } from '../api/context.js'
import type { Config, TemplateConfig } from '../config/types.js'
import { isUserId } from '../domain/ids.js'
import type { RouteSource } from '../domain/routes.js'
import type { TokenService } from '../gateway/tokens.js'
import type { Viewer } from './html.js'
import type { LoginPolicy } from './login-policy.js'
import { OidcLogin } from './oidc.js'
import { addressMatcher, peerAddress, SessionKit, type DashboardUser } from './session.js'

export interface DashboardDeps extends ApiDeps {
  /** Issues the same session cookie the gateway's launch links give. */
  readonly tokens: TokenService
  /** Live route changes (progress, state) for server-sent events. */
  readonly routes: RouteSource
  /** The login offered (web/login-policy.ts, decided at start); default: `dashboard.login` with no provider reports. */
  readonly login?: LoginPolicy
}

/** A form as the dashboard's parser gives it: the first value of each field. */
export type Form = Record<string, string>

/** An identity a login step established: the user and their groups. */
export interface Identity {
  readonly userId: string
  readonly groups: readonly string[]
}

/**
 * What every dashboard area shares: the configuration, the session kit (cookies, form tokens),
 * the login in effect, who the request's user is, and how a page is sent. Built once at start
 * (`registerDashboard`); the route plugins (web/routes/*.ts) receive it as their option.
 */
export class DashboardContext {
  readonly deps: DashboardDeps
  readonly config: Config
  readonly kit: SessionKit
  readonly policy: LoginPolicy
  /** The login actually offered: `off` when the configured one was refused at start. */
  readonly login: LoginPolicy['effective']
  readonly oidc: OidcLogin | undefined
  readonly #trustedProxy: (addr: string) => boolean
  readonly #csp: string
  readonly #viewers = new WeakMap<FastifyRequest, Viewer>()
  readonly #users = new WeakMap<FastifyRequest, DashboardUser>()

  constructor(deps: DashboardDeps, secret: string, policy: LoginPolicy) {
    this.deps = deps
    this.config = deps.config
    this.kit = new SessionKit({ tokens: deps.tokens, secret, config: deps.config })
    this.policy = policy
    this.login = policy.effective
    const dash = deps.config.dashboard
    const publicBase = deps.config.server.publicUrl.replace(/\/+$/, '')
    this.oidc =
      this.login === 'oidc' && dash.oidc ? new OidcLogin(dash.oidc, `${publicBase}/login/callback`) : undefined
    this.#trustedProxy = addressMatcher(dash.header?.trustedProxies ?? [])
    this.#csp = cspHeader(deps.config)
  }

  /** The header and its viewer, once `currentUser` has recognised the request's user. */
  viewerOf(req: FastifyRequest): Viewer | undefined {
    return this.#viewers.get(req)
  }

  /** The user a guard (web/guards.ts) admitted; a route behind a guard always has one. */
  userOf(req: FastifyRequest): DashboardUser {
    const user = this.#users.get(req)
    if (!user) throw new Error('dashboard route without a user guard')
    return user
  }

  /** The page header of a guarded route (the guard recognised the user, so there is one). */
  viewer(req: FastifyRequest): Viewer {
    const v = this.#viewers.get(req)
    if (!v) throw new Error('dashboard route without a user guard')
    return v
  }

  admit(req: FastifyRequest, user: DashboardUser): void {
    this.#users.set(req, user)
  }

  /** Sends an HTML page with the dashboard's security headers. */
  html(reply: FastifyReply, status: number, body: string): FastifyReply {
    return reply
      .code(status)
      .type('text/html; charset=utf-8')
      .header('cache-control', 'no-store')
      .header('content-security-policy', this.#csp)
      .header('x-frame-options', 'DENY')
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'same-origin')
      .send(body)
  }

  /** Header login: the user the trusted login proxy names, when the request comes from it. */
  headerIdentity(req: FastifyRequest): { userId: string; groups: string[] } | undefined {
    const h = this.config.dashboard.header
    if (this.login !== 'header' || !h || !this.#trustedProxy(peerAddress(req))) return undefined
    const user = req.headers[h.userHeader]
    if (!isUserId(user)) return undefined
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

  isAdmin(userId: string, groups: readonly string[]): boolean {
    const dash = this.config.dashboard
    return dash.admins.includes(userId) || groups.some((g) => dash.adminGroups.includes(g))
  }

  /** The signed-in user: the session cookie, or (header mode) the trusted proxy's header. */
  currentUser(req: FastifyRequest): DashboardUser | undefined {
    if (this.login === 'off') return undefined
    // A cookie from a launch link is scoped to one requester's sessions (gateway/tokens.ts): it is not
    // a dashboard login, which would list and open every session of the user.
    const read = this.kit.read(req)
    const s = read && read.claims.requesters === undefined ? read : undefined
    const fromCookie = s
      ? { userId: s.claims.userId, admin: s.claims.admin, groups: s.claims.groups, cookie: s.value, fresh: false }
      : undefined
    const fromHeader = this.headerIdentity(req)
    let user: DashboardUser | undefined = fromCookie
    if (fromHeader) {
      const same =
        fromCookie && fromCookie.userId === fromHeader.userId && sameList(fromCookie.groups, fromHeader.groups)
      if (!same) {
        const admin = this.isAdmin(fromHeader.userId, fromHeader.groups)
        const cookie = this.kit.issue({ userId: fromHeader.userId, admin, groups: fromHeader.groups })
        user = { ...fromHeader, admin, cookie, fresh: true }
      }
    }
    if (user) this.#viewers.set(req, { userId: user.userId, admin: user.admin, csrf: this.kit.csrfFor(user.cookie) })
    return user
  }

  /** A new dashboard session for this identity: the cookie is set and the login state cookie cleared. */
  finishLogin(reply: FastifyReply, identity: Identity, next: string): FastifyReply {
    const admin = this.isAdmin(identity.userId, identity.groups)
    const cookie = this.kit.issue({ userId: identity.userId, admin, groups: identity.groups })
    return reply.header('set-cookie', [this.kit.sessionCookie(cookie), this.loginCookie('', 0)]).redirect(next, 303)
  }

  /** The short-lived cookie that carries login state (dev nonce, OIDC state) to the next step. */
  loginCookie(value: string, maxAgeSeconds: number): string {
    return this.kit.stateCookie(this.#loginCookieName, value, '/login', maxAgeSeconds)
  }

  /** The login state cookie, read by the one cookie module (gateway/session-cookie.ts). */
  readLoginState(req: FastifyRequest): Record<string, unknown> | undefined {
    return this.kit.readSealed(req, this.#loginCookieName)
  }

  get #loginCookieName(): string {
    return `${this.kit.cookieName}_login`
  }

  mayUse(t: TemplateConfig, u: { groups: readonly string[] }): boolean {
    return t.allowedGroups.length === 0 || t.allowedGroups.some((g) => u.groups.includes(g))
  }

  /** The audit log's actor for what a dashboard user does. */
  actor(u: DashboardUser): string {
    return `dashboard:${u.userId}`
  }
}

/** The posted form: its string fields (the dashboard's parser gives only strings; a JSON body may not). */
export function formOf(req: FastifyRequest): Form {
  const b: unknown = req.body
  const form: Form = Object.create(null) as Form
  if (b && typeof b === 'object' && !Array.isArray(b))
    for (const [k, v] of Object.entries(b)) if (typeof v === 'string') form[k] = v
  return form
}

/** A query-string value when it is one string (repeated or absent parameters are ignored). */
export function queryText(q: Record<string, unknown>, key: string): string | undefined {
  const v = q[key]
  return typeof v === 'string' ? v : undefined
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function cspHeader(config: Config): string {
  const sub =
    config.gateway.mode === 'subdomain' && config.gateway.sessionDomain ? ` *.${config.gateway.sessionDomain}` : ''
  return `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'${sub}; frame-ancestors 'none'; base-uri 'none'`
}
