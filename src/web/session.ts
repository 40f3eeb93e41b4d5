import { createHmac, timingSafeEqual } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import type { Config } from '../config/types.js'
import { isInstanceId } from '../domain/ids.js'
import { isLoopback, peerSet, unmapped } from '../gateway/peers.js'
import { firstValid, setCookie } from '../gateway/session-cookie.js'
import { canonicalBytes, sessionUrl, type SessionClaims, type TokenService } from '../gateway/tokens.js'

/**
 * Dashboard sessions ride on the gateway's own session cookie (`tokens.issueSession`), so one
 * login opens both the dashboard and the user's sessions. This file holds what the dashboard adds
 * on top: cookie headers, form tokens (CSRF), the `next` check, a signed short-lived cookie for
 * login state, and peer-address tests.
 */

export interface DashboardUser {
  readonly userId: string
  readonly admin: boolean
  readonly groups: readonly string[]
  /** The session cookie's value (CSRF tokens are bound to it). */
  readonly cookie: string
  /** Set when this request logged the user in (header mode): the response must set the cookie. */
  readonly fresh: boolean
}

export class SessionKit {
  readonly #tokens: TokenService
  readonly #csrfKey: Buffer
  readonly #stateKey: Buffer
  readonly #cookieName: string
  readonly #basePath: string
  readonly #secure: boolean
  readonly #publicOrigin: string
  readonly #publicUrl: string
  readonly #gateway: Config['gateway']

  constructor(opts: { tokens: TokenService; secret: string; config: Config }) {
    this.#tokens = opts.tokens
    // Keys derived per purpose from the gateway secret, which every replica shares.
    this.#csrfKey = createHmac('sha256', opts.secret).update('studiopool/dashboard-csrf/v1').digest()
    this.#stateKey = createHmac('sha256', opts.secret).update('studiopool/dashboard-state/v1').digest()
    this.#cookieName = opts.config.gateway.cookieName
    this.#basePath = opts.config.server.basePath
    const pub = new URL(opts.config.server.publicUrl)
    this.#secure = pub.protocol === 'https:'
    this.#publicOrigin = pub.origin
    this.#publicUrl = opts.config.server.publicUrl
    this.#gateway = opts.config.gateway
  }

  get cookieName(): string {
    return this.#cookieName
  }

  /** The first valid session cookie of the request. */
  read(req: FastifyRequest): { claims: SessionClaims; value: string } | undefined {
    return firstValid(req.headers.cookie, this.#cookieName, (v) => this.#tokens.verifySession(v))
  }

  issue(user: { userId: string; admin: boolean; groups: readonly string[] }): string {
    return this.#tokens.issueSession(user)
  }

  /** `Set-Cookie` for the session cookie: the same attributes the gateway uses. */
  sessionCookie(value: string): string {
    return this.#cookie(this.#cookieName, value, '/', Math.floor(this.#tokens.cookieTtlMs / 1000))
  }

  clearSessionCookie(): string {
    return this.#cookie(this.#cookieName, '', '/', 0)
  }

  #cookie(name: string, value: string, path: string, maxAge: number): string {
    // Under server.basePath only: two studiopools on one host under different prefixes keep their cookies apart.
    return setCookie(name, value, { path: this.#basePath + path, maxAgeSeconds: maxAge, secure: this.#secure })
  }

  /** Form token: HMAC of the session cookie, so it is worthless without that cookie and dies with it. */
  csrfFor(cookieValue: string): string {
    return createHmac('sha256', this.#csrfKey)
      .update('session\0' + cookieValue)
      .digest('base64url')
  }

  checkCsrf(cookieValue: string, presented: unknown): boolean {
    if (typeof presented !== 'string' || presented.length > 100) return false
    const a = Buffer.from(this.csrfFor(cookieValue))
    const b = Buffer.from(presented)
    return a.length === b.length && timingSafeEqual(a, b)
  }

  /**
   * Browser-side CSRF signals, where the browser sends them: `Sec-Fetch-Site` must be same-origin
   * (or none: typed by the user), and `Origin` must be ours. A session app on a sibling subdomain
   * is same-site but not same-origin, so `same-site` is refused too.
   */
  sameOrigin(req: FastifyRequest): boolean {
    const site = req.headers['sec-fetch-site']
    if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') return false
    const origin = req.headers.origin
    if (typeof origin === 'string' && origin !== 'null') {
      if (origin === this.#publicOrigin) return true
      const host = req.headers.host
      return typeof host === 'string' && (origin === `http://${host}` || origin === `https://${host}`)
    }
    if (origin === 'null') return false
    return true
  }

  /**
   * Where to go after login: a same-origin relative path, or the session URL of one of our
   * sessions (subdomain mode). Anything else (another host, `//evil`, `/\evil`, a scheme) is `/`.
   * Paths come back without `server.basePath` (the reply's Location gets it, api/base-path-hook.ts):
   * a `next` that the gateway wrote (`/studiopool/s/<id>/`, an absolute URL) has it, the dashboard's own do not.
   */
  safeNext(next: unknown): string {
    if (typeof next !== 'string' || next.length === 0 || next.length > 2000) return '/'
    if (/[\u0000-\u001f\u007f\\]/.test(next)) return '/'
    if (next.startsWith('/') && !next.startsWith('//')) {
      const u = new URL(next, this.#publicOrigin)
      return u.origin === this.#publicOrigin ? this.#appPath(u.pathname) + u.search + u.hash : '/'
    }
    let u: URL
    try {
      u = new URL(next)
    } catch {
      return '/'
    }
    if (u.username || u.password) return '/'
    if (u.origin === this.#publicOrigin) return this.#appPath(u.pathname) + u.search + u.hash
    if (this.#gateway.mode === 'subdomain' && this.#gateway.sessionDomain) {
      const id = u.hostname.split('.')[0] ?? ''
      if (isInstanceId(id) && new URL(sessionUrl(this.#gateway, this.#publicUrl, id)).origin === u.origin) return u.href
    }
    return '/'
  }

  /** A path as the routes see it: without `server.basePath`. */
  #appPath(path: string): string {
    const base = this.#basePath
    return base !== '' && path.startsWith(base + '/') ? path.slice(base.length) : path
  }

  /** A signed, expiring value for a short-lived cookie (OIDC state, PKCE verifier, nonce). */
  seal(payload: Record<string, unknown>, ttlMs: number): string {
    const body = Buffer.from(JSON.stringify({ ...payload, e: Date.now() + ttlMs })).toString('base64url')
    return `${body}.${createHmac('sha256', this.#stateKey).update(body).digest('base64url')}`
  }

  unseal(value: string | undefined): Record<string, unknown> | undefined {
    if (!value || value.length > 4096) return undefined
    const dot = value.indexOf('.')
    if (dot < 0) return undefined
    const body = value.slice(0, dot)
    // One encoding, as for tokens (gateway/tokens.ts): a padded or re-encoded MAC or body is refused.
    const given = canonicalBytes(value.slice(dot + 1))
    const expected = createHmac('sha256', this.#stateKey).update(body).digest()
    if (!given || given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
    const raw = canonicalBytes(body)
    if (!raw) return undefined
    try {
      const p = JSON.parse(raw.toString('utf8')) as Record<string, unknown>
      return typeof p.e === 'number' && p.e > Date.now() ? p : undefined
    } catch {
      return undefined
    }
  }

  /** The first value of a short-lived cookie (`stateCookie`) that unseals, by the one cookie module's rules. */
  readSealed(req: FastifyRequest, name: string): Record<string, unknown> | undefined {
    return firstValid(req.headers.cookie, name, (v) => this.unseal(v))?.claims
  }

  stateCookie(name: string, value: string, path: string, maxAgeSeconds: number): string {
    return this.#cookie(name, value, path, maxAgeSeconds)
  }
}

/** The socket's peer address: never a header (X-Forwarded-For is the client's to write). */
export function peerAddress(req: FastifyRequest): string {
  return unmapped(req.raw.socket?.remoteAddress ?? '')
}

export { isLoopback }

/** Addresses from `dashboard.header.trustedProxies`, in the one peer grammar (gateway/peers.ts). */
export function addressMatcher(list: readonly string[]): (addr: string) => boolean {
  const set = peerSet(list)
  return (addr) => set.match(addr)
}
