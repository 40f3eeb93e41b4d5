import type { IncomingMessage } from 'node:http'
import type { RouteEntry } from '../domain/routes.js'
import type { RequestHeads } from './headers.js'
import { peerSet } from './peers.js'
import type { PeerSet } from './peers.js'
import type { SessionClaims } from './tokens.js'

/**
 * Who may use a session and from where: the owner (or an admin, when allowed), with a cookie
 * whose requester scope names the session; Origin checks for WebSockets, the switch form and
 * state-changing requests to app-token sessions; and which peers' X-Forwarded-* are believed.
 */
export class AccessPolicy {
  readonly #adminAccess: boolean
  readonly #allowedOrigins: Set<string>
  readonly #trust: PeerSet
  readonly #trustsAny: boolean
  /** The public URL's host, when the request names none. */
  readonly publicHost: string

  constructor(opts: {
    adminAccess: boolean
    publicUrl: string
    allowedOrigins: readonly string[]
    trustProxy: readonly string[]
  }) {
    const pub = new URL(opts.publicUrl)
    this.#adminAccess = opts.adminAccess
    this.publicHost = pub.host
    this.#allowedOrigins = new Set([pub.origin, ...opts.allowedOrigins.map((o) => o.replace(/\/+$/, ''))])
    this.#trust = peerSet(opts.trustProxy)
    this.#trustsAny = !this.#trust.empty
  }

  /** X-Forwarded-* are believed only from the peers in server.trustProxy. */
  isTrusted(req: IncomingMessage): boolean {
    return this.#trustsAny && this.#trust.match(req.socket.remoteAddress ?? '')
  }

  mayUse(claims: SessionClaims, route: RouteEntry): boolean {
    if (this.#adminAccess && claims.admin) return true
    if (route.ownerId === null || claims.userId !== route.ownerId) return false
    // A launch-link cookie opens only sessions of the requesters it names (issue 8); a dashboard login, all of the user's.
    return claims.requesters === undefined || claims.requesters.includes(scopeOf(route.requester))
  }

  /** Browsers always send Origin on WebSocket handshakes and form POSTs; other clients cannot be driven cross-site. */
  originAllowed(origin: string | undefined, host: string): boolean {
    if (origin === undefined) return true
    if (this.#allowedOrigins.has(origin)) return true
    // Same origin as the request itself (the session's subdomain, or the host the user typed).
    const sep = origin.indexOf('://')
    return sep > 0 && origin.slice(sep + 3).toLowerCase() === host.toLowerCase()
  }

  /** The host as the client used it: a trusted proxy's X-Forwarded-Host, else Host, else the public URL's. */
  clientHost(req: IncomingMessage, heads: RequestHeads): string {
    return (this.isTrusted(req) && heads.xForwardedHost?.split(',')[0]!.trim()) || heads.host || this.publicHost
  }

  /** A POST of the switch form: Origin must be one of ours (browsers always send it on a form POST). */
  postFromUs(req: IncomingMessage): boolean {
    const site = req.headers['sec-fetch-site']
    if (typeof site === 'string' && site !== 'same-origin') return false
    const origin = req.headers.origin
    if (typeof origin !== 'string' || origin === 'null') return false
    const xfh = this.isTrusted(req) ? firstValue(req.headers['x-forwarded-host']) : undefined
    return this.originAllowed(origin, xfh || req.headers.host || this.publicHost)
  }

  /**
   * The gateway vouches for requests to a template with upstreamHeaders (the app token), so the app's
   * own CSRF defence can no longer tell them apart: Jupyter skips its XSRF and Origin checks for
   * token-authenticated requests. So a state-changing request must come from the session's own pages
   * (or from no browser page at all): `Sec-Fetch-Site` same-origin or none, and an `Origin` of ours.
   * A sibling session on the same site (subdomain mode) or another site is refused.
   */
  fromOwnPage(req: IncomingMessage, heads: RequestHeads): boolean {
    const site = req.headers['sec-fetch-site']
    if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') return false
    if (heads.origin === undefined) return true
    if (heads.origin === 'null') return false
    return this.originAllowed(heads.origin, this.clientHost(req, heads))
  }
}

/** A route's requester as a cookie scope entry: '' for a session without one. */
export function scopeOf(requester: string | null | undefined): string {
  return requester ?? ''
}

function firstValue(v: string | string[] | undefined): string | undefined {
  const s = Array.isArray(v) ? v[0] : v
  return s?.split(',')[0]!.trim() || undefined
}
