import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { NonceLedger } from '../domain/routes.js'
import type { AccessPolicy } from './access.js'
import { scopeOf } from './access.js'
import { switchRefusedPage, switchUserPage, unavailablePage } from './pages.js'
import { errSummary } from './proxy-errors.js'
import { sendPage } from './responses.js'
import type { RouteTable } from './route-table.js'
import { firstValid, setCookie } from './session-cookie.js'
import { queryParam } from './session-path.js'
import type { SessionPaths } from './session-path.js'
import { MAX_COOKIE_REQUESTERS, SWITCH_PARAM } from './tokens.js'
import type { LaunchClaims, SessionClaims, TokenService } from './tokens.js'

export interface LaunchDeps {
  readonly tokens: TokenService
  readonly nonces: NonceLedger
  readonly log: Logger
  readonly paths: SessionPaths
  readonly access: AccessPolicy
  readonly table: RouteTable
  readonly cookieName: string
  /** The session cookie's Path: `${basePath}/` in path mode, `/` on a session host. */
  readonly cookiePath?: string
  readonly secureCookie: boolean
  readonly dashboardUrl: string
  /** The 401 answer (login page or JSON) with a message. */
  readonly unauthorized: (req: IncomingMessage, res: ServerResponse, id: string, rest: string, message: string) => void
}

/**
 * The launch-link station: `?sp_token=…` is traded for the session cookie, then the browser is
 * redirected to the clean URL. In a browser that holds another user's valid cookie, it asks first
 * (issue 8): the GET shows "continue as …?" without consuming the token; only a POST of that
 * page's form, from our origin and carrying the one-shot secret bound to the nonce and the current
 * cookie, consumes it and switches.
 */
export class LaunchDesk {
  constructor(readonly d: LaunchDeps) {}

  /** The `Set-Cookie` value of a session cookie. */
  sessionCookie(value: string): string {
    return setCookie(this.d.cookieName, value, {
      ...(this.d.cookiePath ? { path: this.d.cookiePath } : {}),
      maxAgeSeconds: Math.floor(this.d.tokens.cookieTtlMs / 1000),
      secure: this.d.secureCookie,
    })
  }

  async redeem(req: IncomingMessage, res: ServerResponse, id: string, rest: string, token: string): Promise<void> {
    const { tokens, log } = this.d
    const clean = this.d.paths.cleanUrl(id, rest)
    const claims = tokens.verifyLaunch(token)
    const cur = firstValid(req.headers.cookie, this.d.cookieName, (v) => tokens.verifySession(v))
    const valid = claims !== undefined && claims.instanceId === id
    if (valid && cur && cur.claims.userId !== claims.userId && !this.#switchAllowed(req, res, id, rest, claims, cur))
      return
    let first = false
    if (valid) {
      try {
        first = await this.d.nonces.consumeOnce(claims.nonce, claims.expiresAt)
      } catch (err) {
        log.warn({ err: errSummary(err), instanceId: id }, 'launch token ledger unavailable')
        sendPage(res, unavailablePage('The sign-in service is not reachable right now.'))
        return
      }
    }
    if (valid && first) {
      const cookie = this.#launchCookie(claims, cur?.claims)
      // 303 after the switch form's POST, so the browser GETs the session.
      res.writeHead(req.method === 'POST' ? 303 : 302, {
        location: clean,
        'cache-control': 'no-store',
        'referrer-policy': 'no-referrer',
        ...(cookie ? { 'set-cookie': cookie } : {}),
      })
      res.end()
      return
    }
    // A used or expired link: fine if the browser already holds a cookie that opens this session (back button, reload).
    const route = this.d.table.get(id)
    if (cur && route && this.d.access.mayUse(cur.claims, route.entry)) {
      res.writeHead(302, { location: clean, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' })
      res.end()
      return
    }
    log.info({ instanceId: id, reason: claims ? 'reused' : 'invalid or expired' }, 'launch link refused')
    this.d.unauthorized(
      req,
      res,
      id,
      rest,
      'This launch link has expired or was already used. Sign in, or ask for a new link.',
    )
  }

  /** Another user's cookie is present: true when this request is the switch form's valid POST; else it answered. */
  #switchAllowed(
    req: IncomingMessage,
    res: ServerResponse,
    id: string,
    rest: string,
    claims: LaunchClaims,
    cur: { claims: SessionClaims; value: string },
  ): boolean {
    const presented = queryParam(rest, SWITCH_PARAM)
    if (req.method !== 'POST' || presented === null) {
      const q = new URLSearchParams(rest.slice(rest.indexOf('?') + 1))
      q.set(SWITCH_PARAM, this.d.tokens.switchProof(claims.nonce, cur.value))
      sendPage(
        res,
        switchUserPage({
          current: cur.claims.userId,
          target: claims.userId,
          action: `?${q}`,
          stayHref: this.d.dashboardUrl,
        }),
      )
      return false
    }
    req.resume()
    if (!this.d.access.postFromUs(req) || !this.d.tokens.checkSwitchProof(claims.nonce, cur.value, presented)) {
      this.d.log.info({ instanceId: id }, 'launch link switch refused (origin or form secret)')
      sendPage(res, switchRefusedPage(this.d.dashboardUrl))
      return false
    }
    return true
  }

  /**
   * The cookie a redeemed launch link sets: scoped to the session's requester. A cookie of the same
   * user is kept when it already opens the session (an unscoped dashboard login, or a scope that names
   * this requester), or widened with this requester otherwise (most recent MAX_COOKIE_REQUESTERS kept).
   */
  #launchCookie(claims: LaunchClaims, current: SessionClaims | undefined): string | undefined {
    const scope = scopeOf(claims.requester)
    const same = current && current.userId === claims.userId ? current : undefined
    if (same && (same.requesters === undefined || same.requesters.includes(scope))) return undefined
    const requesters = [...(same?.requesters ?? []).filter((r) => r !== scope), scope].slice(-MAX_COOKIE_REQUESTERS)
    return this.sessionCookie(
      this.d.tokens.issueSession({ userId: claims.userId, admin: false, groups: [], requesters }),
    )
  }
}
