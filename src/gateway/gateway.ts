import http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { Config } from '../config/types.js'
import { isInstanceId } from '../domain/ids.js'
import type { ActivitySink, NonceLedger, RouteEntry, RouteSource } from '../domain/routes.js'
import { createForwarder, scanRequestHeaders, writeRawStatus } from './forward.js'
import type { Closeable, ForwardContext, ForwardHooks, RequestHeads } from './forward.js'
import { createGatewayMetrics, statusClass } from './metrics.js'
import {
  badGatewayPage,
  endedPage,
  forbiddenPage,
  loginPage,
  notFoundPage,
  pausedPage,
  progressPage,
  switchRefusedPage,
  switchUserPage,
  unavailablePage,
} from './pages.js'
import type { Page } from './pages.js'
import { peerSet } from './peers.js'
import { compileRoute, RouteTable } from './route-table.js'
import type { CompiledRoute } from './route-table.js'
import { headerSafe, renderUpstreamHeader } from '../domain/upstream-headers.js'
import { LAUNCH_PARAM, MAX_COOKIE_REQUESTERS, sessionUrl, SWITCH_PARAM } from './tokens.js'
import type { LaunchClaims, SessionClaims, TokenService } from './tokens.js'

export interface GatewayOptions {
  readonly config: Config['gateway']
  /** `Config['server']['publicUrl']`: where users reach us; its origin is one of ours (WebSocket Origin check), https there makes cookies Secure. */
  readonly publicUrl: string
  readonly routes: RouteSource
  readonly activity: ActivitySink
  readonly nonces: NonceLedger
  readonly tokens: TokenService
  readonly log: Logger
  readonly metrics?: Registry
  /** Everything that is not a session (API, dashboard). Tried before `config.defaultUrl`. */
  readonly fallback?: (req: IncomingMessage, res: ServerResponse) => void
  readonly fallbackUpgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void
  /** Tried first for non-session requests: answers /healthz, /readyz and /metrics (the gateway role) and returns true, else false. */
  readonly probes?: (req: IncomingMessage, res: ServerResponse) => boolean
  /** Default `/login` (relative to publicUrl); the login page links to `${dashboardLoginUrl}?next=<url>`. */
  readonly dashboardLoginUrl?: string
  /** `Config['server']['trustProxy']`: peers whose X-Forwarded-For/-Proto/-Host we believe (gateway/peers.ts grammar). */
  readonly trustProxy?: readonly string[]
}

export interface Gateway {
  handleRequest(req: IncomingMessage, res: ServerResponse): void
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void
  /** Its own http.Server with these handlers (split mode, tests). */
  listen(port: number, host: string): Promise<AddressInfo>
  /** Stops following routes, closes every proxied connection and the listener, and flushes activity. */
  close(): Promise<void>
  /** Writes pending activity now. */
  flushActivity(): Promise<void>
  /** Shutting down: WebSockets get close frames 1001 both ways, proxied event streams end; other requests may finish. */
  goAway(): void
}

const PREFIX_LEN = 3 // '/s/'
const ID_LEN = 20
const ID_END = PREFIX_LEN + ID_LEN

type Resolved =
  | { readonly kind: 'session'; readonly id: string; readonly prefix: string; readonly rest: string }
  | { readonly kind: 'redirect'; readonly location: string }
  | { readonly kind: 'bad-id' }
  | null

/**
 * The gateway (DESIGN.md contract 3). Decision order for a session request:
 * id format (404 without touching the table) → launch token (trade for cookie, redirect to the
 * clean URL) → cookie (401 login page / JSON) → route (404 ended page) → owner or admin (403)
 * → state (progress / paused / ended page) → forward. Non-session requests go to `fallback`
 * (the API and dashboard) when given, else to `config.defaultUrl` (the seed's DEFAULT_URL, no
 * login), else a 404 page.
 */
export function createGateway(opts: GatewayOptions): Gateway {
  const cfg = opts.config
  const log = opts.log
  const metrics = createGatewayMetrics(opts.metrics)
  const pub = new URL(opts.publicUrl)
  const publicBase = opts.publicUrl.replace(/\/+$/, '')
  const publicOrigin = pub.origin
  const dashboardUrl = publicBase + '/'
  const secureCookie = pub.protocol === 'https:'
  const loginBase = (() => {
    const l = opts.dashboardLoginUrl ?? '/login'
    return l.startsWith('/') ? publicBase + l : l
  })()
  const subdomain = cfg.mode === 'subdomain' && cfg.sessionDomain ? cfg.sessionDomain.toLowerCase() : null
  const allowedOrigins = new Set([publicOrigin, ...cfg.allowedOrigins.map((o) => o.replace(/\/+$/, ''))])
  const trust = peerSet(opts.trustProxy ?? [])
  const trustsAny = trust.loopback || trust.ranges.length > 0
  const cookieName = cfg.cookieName
  const defaultRoute: CompiledRoute | null = cfg.defaultUrl
    ? compileRoute({
        instanceId: '_default',
        ownerId: null,
        template: '_default',
        state: 'ready',
        address: cfg.defaultUrl,
        pathMode: 'keep',
        hostHeader: 'target',
        progress: 100,
        progressMessage: '',
        queuePosition: null,
        generation: 0,
        failureReason: null,
      })
    : null

  const forwarder = createForwarder({ upstreamTimeoutMs: cfg.upstreamTimeoutMs })

  /** Open exchanges per instance, closed when the route is removed or replaced. */
  const open = new Map<string, Set<Closeable>>()
  function track(id: string, c: Closeable): void {
    let set = open.get(id)
    if (!set) open.set(id, (set = new Set()))
    set.add(c)
  }
  function untrack(id: string, c: Closeable): void {
    const set = open.get(id)
    if (set && set.delete(c) && set.size === 0) open.delete(id)
  }
  const table = new RouteTable({
    routeToReplace: cfg.routeToReplace,
    stringToReplace: cfg.stringToReplace,
    onDrop: ({ instanceId, reason }) => {
      const set = open.get(instanceId)
      if (!set) return
      open.delete(instanceId)
      log.info({ instanceId, reason, connections: set.size }, 'closing connections of a dropped route')
      for (const c of [...set]) c.close()
    },
  })
  table.follow(opts.routes)

  // ---- activity: last time per instance, in memory; one write per instance per interval.
  let pending = new Map<string, number>()
  let flushing: Promise<void> = Promise.resolve()
  function touch(id: string): void {
    pending.set(id, Date.now())
  }
  function flushActivity(): Promise<void> {
    flushing = flushing.then(async () => {
      if (pending.size === 0) return
      const batch = pending
      pending = new Map()
      const entries = [...batch].map(([id, at]) => ({ id, at }))
      try {
        await opts.activity.recordActivity(entries)
        metrics.activityWrite('ok', entries.length)
      } catch (err) {
        metrics.activityWrite('error', entries.length)
        log.warn({ err: errSummary(err), entries: entries.length }, 'activity write failed; will retry')
        for (const [id, at] of batch) if ((pending.get(id) ?? 0) < at) pending.set(id, at)
      }
    })
    return flushing
  }
  const flushTimer = setInterval(() => void flushActivity(), Math.max(100, cfg.activityFlushMs))
  flushTimer.unref()

  // ---- request parsing
  function resolve(req: IncomingMessage): Resolved {
    const url = req.url ?? '/'
    if (subdomain) {
      const host = rawHost(req.rawHeaders)
      if (host) {
        const colon = host.indexOf(':')
        const name = (colon >= 0 ? host.slice(0, colon) : host).toLowerCase()
        if (
          name.length > subdomain.length + 1 &&
          name.endsWith(subdomain) &&
          name.charCodeAt(name.length - subdomain.length - 1) === 46
        ) {
          const label = name.slice(0, name.length - subdomain.length - 1)
          if (label.indexOf('.') >= 0 || !isInstanceId(label)) return { kind: 'bad-id' }
          return { kind: 'session', id: label, prefix: '', rest: url }
        }
      }
      // A path-mode link on the main host: send it to the session's own origin.
      if (url.startsWith('/s/')) {
        const id = url.slice(PREFIX_LEN, ID_END)
        const c = url.charCodeAt(ID_END)
        if (!isInstanceId(id) || !(Number.isNaN(c) || c === 47 || c === 63)) return { kind: 'bad-id' }
        const rest = c === 47 ? url.slice(ID_END + 1) : url.slice(ID_END)
        return { kind: 'redirect', location: sessionUrl(cfg, opts.publicUrl, id) + rest }
      }
      return null
    }
    if (!url.startsWith('/s/')) return null
    const id = url.slice(PREFIX_LEN, ID_END)
    if (!isInstanceId(id)) return { kind: 'bad-id' }
    const c = url.charCodeAt(ID_END)
    if (c === 47 /* / */) return { kind: 'session', id, prefix: url.slice(0, ID_END), rest: url.slice(ID_END) }
    if (Number.isNaN(c) || c === 63 /* ? */) return { kind: 'redirect', location: `/s/${id}/${url.slice(ID_END)}` }
    return { kind: 'bad-id' }
  }

  function isTrusted(req: IncomingMessage): boolean {
    return trustsAny && trust.match(req.socket.remoteAddress ?? '')
  }

  function cookieValues(header: string | undefined): string[] {
    if (!header) return []
    const key = cookieName + '='
    const out: string[] = []
    let i = header.indexOf(key)
    while (i !== -1 && out.length < 8) {
      if (i === 0 || header.charCodeAt(i - 1) === 32 || header.charCodeAt(i - 1) === 59) {
        const end = header.indexOf(';', i)
        out.push(header.slice(i + key.length, end === -1 ? undefined : end).trim())
      }
      i = header.indexOf(key, i + key.length)
    }
    return out
  }

  function claimsOf(cookie: string | undefined): SessionClaims | undefined {
    for (const v of cookieValues(cookie)) {
      const c = opts.tokens.verifySession(v)
      if (c) return c
    }
    return undefined
  }

  function stripOwnCookie(header: string | undefined): string | undefined {
    if (!header) return header
    const at = header.indexOf(cookieName + '=')
    if (at === -1) return header
    // The common case: ours is the only cookie.
    if (at === 0 && header.indexOf(';') === -1) return undefined
    const kept: string[] = []
    for (const part of header.split(';')) {
      const t = part.trim()
      if (t && !t.startsWith(cookieName + '=')) kept.push(t)
    }
    return kept.length ? kept.join('; ') : undefined
  }

  function mayUse(claims: SessionClaims, route: RouteEntry): boolean {
    if (cfg.adminAccess && claims.admin) return true
    if (route.ownerId === null || claims.userId !== route.ownerId) return false
    // A launch-link cookie opens only sessions of the requesters it names (issue 8); a dashboard login, all of the user's.
    return claims.requesters === undefined || claims.requesters.includes(scopeOf(route.requester))
  }

  /** The session URL without the launch token: path (+query) in path mode, absolute in subdomain mode. */
  function cleanUrl(id: string, rest: string): string {
    const q = rest.indexOf('?')
    let path = q >= 0 ? rest.slice(0, q) : rest
    let query = ''
    if (q >= 0) {
      const params = new URLSearchParams(rest.slice(q + 1))
      params.delete(LAUNCH_PARAM)
      params.delete(SWITCH_PARAM)
      const s = params.toString()
      if (s) query = '?' + s
    }
    if (subdomain) return sessionUrl(cfg, opts.publicUrl, id).slice(0, -1) + (path || '/') + query
    if (!path.startsWith('/')) path = '/' + path
    return `${pub.pathname.replace(/\/+$/, '')}/s/${id}${path}${query}`
  }

  function sendPage(res: ServerResponse, page: Page): void {
    res.writeHead(page.status, {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'content-length': Buffer.byteLength(page.html),
      ...page.headers,
    })
    res.end(page.html)
  }

  function wantsHtml(req: IncomingMessage): boolean {
    const a = req.headers.accept
    return typeof a === 'string' && a.includes('text/html')
  }

  function unauthorized(req: IncomingMessage, res: ServerResponse, id: string, rest: string, message?: string): void {
    if (wantsHtml(req)) {
      const next = cleanUrl(id, rest)
      sendPage(res, loginPage(`${loginBase}?next=${encodeURIComponent(next)}`, message))
      return
    }
    const body = JSON.stringify({
      error: {
        code: 'UNAUTHORIZED',
        message: message ?? 'a session cookie is needed; open the launch link or sign in',
      },
    })
    res.writeHead(401, {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(body),
    })
    res.end(body)
  }

  function sessionCookie(value: string): string {
    return `${cookieName}=${value}; Path=/; Max-Age=${Math.floor(opts.tokens.cookieTtlMs / 1000)}; HttpOnly; SameSite=Lax${secureCookie ? '; Secure' : ''}`
  }

  /** The first valid session cookie, with its value (the switch form's secret is bound to it). */
  function currentCookie(header: string | undefined): { claims: SessionClaims; value: string } | undefined {
    for (const v of cookieValues(header)) {
      const c = opts.tokens.verifySession(v)
      if (c) return { claims: c, value: v }
    }
    return undefined
  }

  /**
   * The cookie a redeemed launch link sets: scoped to the session's requester. A cookie of the same
   * user is kept when it already opens the session (an unscoped dashboard login, or a scope that names
   * this requester), or widened with this requester otherwise (most recent MAX_COOKIE_REQUESTERS kept).
   */
  function launchCookie(claims: LaunchClaims, current: SessionClaims | undefined): string | undefined {
    const scope = scopeOf(claims.requester)
    const same = current && current.userId === claims.userId ? current : undefined
    if (same && (same.requesters === undefined || same.requesters.includes(scope))) return undefined
    const requesters = [...(same?.requesters ?? []).filter((r) => r !== scope), scope].slice(-MAX_COOKIE_REQUESTERS)
    return sessionCookie(opts.tokens.issueSession({ userId: claims.userId, admin: false, groups: [], requesters }))
  }

  /** A POST of the switch form: Origin must be one of ours (browsers always send it on a form POST). */
  function postFromUs(req: IncomingMessage): boolean {
    const site = req.headers['sec-fetch-site']
    if (typeof site === 'string' && site !== 'same-origin') return false
    const origin = req.headers.origin
    if (typeof origin !== 'string' || origin === 'null') return false
    return originAllowed(
      origin,
      (isTrusted(req) && firstValue(req.headers['x-forwarded-host'])) || req.headers.host || pub.host,
    )
  }

  /**
   * `?sp_token=…` present: trade it for the cookie, then redirect to the clean URL. In a browser that
   * holds another user's valid cookie, ask first (issue 8): the GET shows "continue as …?" without
   * consuming the token; only a POST of that page's form, from our origin and carrying the one-shot
   * secret bound to the nonce and the current cookie, consumes it and switches.
   */
  async function redeemLaunch(
    req: IncomingMessage,
    res: ServerResponse,
    id: string,
    rest: string,
    token: string,
  ): Promise<void> {
    const clean = cleanUrl(id, rest)
    const claims = opts.tokens.verifyLaunch(token)
    const cur = currentCookie(req.headers.cookie)
    const current = cur?.claims
    const valid = claims !== undefined && claims.instanceId === id
    if (valid && cur && cur.claims.userId !== claims.userId) {
      const presented = queryParam(rest, SWITCH_PARAM)
      if (req.method !== 'POST' || presented === null) {
        const q = new URLSearchParams(rest.slice(rest.indexOf('?') + 1))
        q.set(SWITCH_PARAM, opts.tokens.switchProof(claims.nonce, cur.value))
        sendPage(
          res,
          switchUserPage({
            current: cur.claims.userId,
            target: claims.userId,
            action: `?${q}`,
            stayHref: dashboardUrl,
          }),
        )
        return
      }
      req.resume()
      if (!postFromUs(req) || !opts.tokens.checkSwitchProof(claims.nonce, cur.value, presented)) {
        log.info({ instanceId: id }, 'launch link switch refused (origin or form secret)')
        sendPage(res, switchRefusedPage(dashboardUrl))
        return
      }
    }
    let first = false
    if (valid) {
      try {
        first = await opts.nonces.consumeOnce(claims.nonce, claims.expiresAt)
      } catch (err) {
        log.warn({ err: errSummary(err), instanceId: id }, 'launch token ledger unavailable')
        sendPage(res, unavailablePage('The sign-in service is not reachable right now.'))
        return
      }
    }
    if (valid && first) {
      const cookie = launchCookie(claims, current)
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
    const route = table.get(id)
    if (current && route && mayUse(current, route.entry)) {
      res.writeHead(302, { location: clean, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' })
      res.end()
      return
    }
    log.info({ instanceId: id, reason: claims ? 'reused' : 'invalid or expired' }, 'launch link refused')
    unauthorized(
      req,
      res,
      id,
      rest,
      'This launch link has expired or was already used. Sign in, or ask for a new link.',
    )
  }

  function launchToken(rest: string): string | null {
    return queryParam(rest, LAUNCH_PARAM)
  }

  function handleRequest(req: IncomingMessage, res: ServerResponse): void {
    const r = resolve(req)
    if (r === null) return notSession(req, res)
    if (r.kind === 'bad-id') return sendPage(res, notFoundPage(dashboardUrl))
    if (r.kind === 'redirect') {
      res.writeHead(302, { location: r.location, 'cache-control': 'no-store' })
      res.end()
      return
    }
    const { id, rest } = r
    const token = launchToken(rest)
    if (token !== null) {
      redeemLaunch(req, res, id, rest, token).catch((err: unknown) => {
        log.error({ err: errSummary(err), instanceId: id }, 'launch failed')
        if (!res.headersSent) sendPage(res, unavailablePage('Something went wrong while opening the session.'))
      })
      return
    }
    const heads = scanRequestHeaders(req.rawHeaders)
    const claims = claimsOf(heads.cookie)
    if (!claims) return unauthorized(req, res, id, rest)
    const route = table.get(id)
    if (!route) return sendPage(res, endedPage(dashboardUrl))
    const e = route.entry
    if (!mayUse(claims, e)) return sendPage(res, forbiddenPage(dashboardUrl, claims.userId === e.ownerId))
    if (e.state !== 'ready' || route.hostname === null) return sendPage(res, stateRoutePage(e))
    if (e.upstreamHeaders && !SAFE_METHODS.has(req.method ?? 'GET') && !fromOwnPage(req, heads)) {
      log.info({ instanceId: id, origin: heads.origin }, 'cross-origin request to an app-token session refused')
      return crossOrigin(req, res)
    }
    forward(req, res, heads, route, r.prefix, rest, claims)
  }

  /**
   * The gateway vouches for requests to a template with upstreamHeaders (the app token), so the app's
   * own CSRF defence can no longer tell them apart: Jupyter skips its XSRF and Origin checks for
   * token-authenticated requests. So a state-changing request must come from the session's own pages
   * (or from no browser page at all): `Sec-Fetch-Site` same-origin or none, and an `Origin` of ours.
   * A sibling session on the same site (subdomain mode) or another site is refused.
   */
  function fromOwnPage(req: IncomingMessage, heads: RequestHeads): boolean {
    const site = req.headers['sec-fetch-site']
    if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') return false
    if (heads.origin === undefined) return true
    if (heads.origin === 'null') return false
    const host = (isTrusted(req) && heads.xForwardedHost?.split(',')[0]!.trim()) || heads.host || pub.host
    return originAllowed(heads.origin, host)
  }

  function crossOrigin(req: IncomingMessage, res: ServerResponse): void {
    const body = JSON.stringify({
      error: { code: 'FORBIDDEN', message: 'a request from another site to this session was refused' },
    })
    res.writeHead(403, {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(body),
    })
    res.end(body)
    req.resume()
  }

  function stateRoutePage(e: RouteEntry): Page {
    switch (e.state) {
      case 'queued':
      case 'provisioning':
      case 'starting':
        return progressPage(e)
      case 'ready': // ready without an address: about to be known
        return progressPage({ ...e, progress: Math.max(e.progress, 99) })
      case 'stopping':
      case 'suspended':
        return pausedPage(dashboardUrl, e.state)
      default:
        return endedPage(dashboardUrl, e.failureReason)
    }
  }

  /** The owner's identity and the template's upstreamHeaders, per route (its owner and generation are fixed). */
  const upstreamCache = new WeakMap<CompiledRoute, readonly string[]>()
  function upstreamFields(route: CompiledRoute, claims: SessionClaims | undefined): readonly string[] {
    const e = route.entry
    if (e.ownerId === null) return NO_FIELDS
    let base = upstreamCache.get(route)
    if (base === undefined) {
      const list: string[] = ['x-forwarded-user', headerSafe(e.ownerId)]
      const tpl = e.upstreamHeaders
      if (tpl) {
        // Never logged: the values may hold the app token.
        const values = {
          appToken: opts.tokens.appToken(e.instanceId, e.generation),
          user: e.ownerId,
          instanceId: e.instanceId,
        }
        for (const [name, value] of Object.entries(tpl))
          list.push(name.toLowerCase(), renderUpstreamHeader(value, values))
      }
      upstreamCache.set(route, (base = list))
    }
    // Groups only when the login knows them and they are the owner's own (not an admin's visiting).
    if (claims && claims.userId === e.ownerId && claims.groups.length)
      return [...base, 'x-forwarded-groups', headerSafe(claims.groups.join(','))]
    return base
  }

  function context(
    req: IncomingMessage,
    heads: RequestHeads,
    route: CompiledRoute,
    prefix: string,
    rest: string,
    claims?: SessionClaims,
  ): ForwardContext {
    const strip = prefix !== '' && route.entry.pathMode === 'strip'
    const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true
    // X-Forwarded-* are believed only from the peers in server.trustProxy.
    const trusted = isTrusted(req)
    const xfp = trusted ? heads.xForwardedProto?.split(',')[0]!.trim() : undefined
    const xfh = trusted ? heads.xForwardedHost?.split(',')[0]!.trim() : undefined
    return {
      route,
      prefix,
      path: strip ? rest : prefix + rest,
      strip,
      heads,
      clientIp: req.socket.remoteAddress ?? '',
      proto: xfp || (encrypted ? 'https' : 'http'),
      host: xfh || heads.host || pub.host,
      priorForwardedFor: trusted ? heads.xForwardedFor : undefined,
      cookie: stripOwnCookie(heads.cookie),
      cookieName,
      upstream: route === defaultRoute ? NO_FIELDS : upstreamFields(route, claims),
    }
  }

  /** Hooks shared by every proxied session request (no per-request closures). */
  const sessionHooks: ForwardHooks = {
    onResponse(x, status) {
      // STYLE.md (after CHP): only successful exchanges count as activity; the app's own keep-alive
      // polling (the template's activityIgnore paths, relative to the session root) does not.
      if (status < 300) {
        const ignore = x.ctx.route.activityIgnore
        if (ignore) {
          const rel = x.ctx.strip ? x.ctx.path : x.ctx.path.slice(x.ctx.prefix.length)
          const q = rel.indexOf('?')
          if (ignore.test(q < 0 ? rel : rel.slice(0, q))) return
        }
        touch(x.ctx.route.entry.instanceId)
      }
    },
    onDone(x, status) {
      untrack(x.ctx.route.entry.instanceId, x)
      metrics.request(statusClass(status), (performance.now() - x.started) / 1000)
    },
    onUpstreamError(x, err) {
      upstreamFailed(err, x.ctx.route.entry.instanceId, x.req)
      sendPage(x.res, badGatewayPage(err.code === 'ETIMEDOUT' ? 504 : 502, dashboardUrl))
    },
  }

  /** The seed's DEFAULT_URL target: no activity, no metrics. */
  const defaultHooks: ForwardHooks = {
    onResponse() {},
    onDone() {},
    onUpstreamError(x, err) {
      upstreamFailed(err, '_default', x.req)
      sendPage(x.res, badGatewayPage(502, dashboardUrl))
    },
  }

  function forward(
    req: IncomingMessage,
    res: ServerResponse,
    heads: RequestHeads,
    route: CompiledRoute,
    prefix: string,
    rest: string,
    claims: SessionClaims,
  ): void {
    const x = forwarder.http(req, res, context(req, heads, route, prefix, rest, claims), sessionHooks)
    // Tracked only while open: a synchronous failure has already called onDone.
    if (!x.done) track(route.entry.instanceId, x)
  }

  function upstreamFailed(err: NodeJS.ErrnoException, id: string, req: IncomingMessage): void {
    const code = err.code ?? 'UNKNOWN'
    metrics.upstreamError(code)
    const path = redact(req.url)
    // CHP's list: the app is down or restarting; a stack trace says nothing more.
    if (
      code === 'ECONNREFUSED' ||
      code === 'ECONNRESET' ||
      code === 'EHOSTUNREACH' ||
      code === 'ETIMEDOUT' ||
      code === 'ENOTFOUND' ||
      code === 'EPIPE'
    ) {
      log.warn({ instanceId: id, code, path }, 'upstream did not answer')
    } else {
      log.error({ instanceId: id, err, path }, 'upstream request failed')
    }
  }

  function notSession(req: IncomingMessage, res: ServerResponse): void {
    if (opts.probes?.(req, res)) return
    if (opts.fallback) return opts.fallback(req, res)
    if (defaultRoute && defaultRoute.hostname !== null) {
      forwarder.http(
        req,
        res,
        context(req, scanRequestHeaders(req.rawHeaders), defaultRoute, '', req.url ?? '/'),
        defaultHooks,
      )
      return
    }
    sendPage(res, notFoundPage(dashboardUrl))
  }

  // ---- WebSockets
  function originAllowed(origin: string | undefined, host: string): boolean {
    // Browsers always send Origin on WebSocket handshakes; other clients cannot be driven cross-site.
    if (origin === undefined) return true
    if (allowedOrigins.has(origin)) return true
    // Same origin as the handshake itself (the session's subdomain, or the host the user typed).
    const sep = origin.indexOf('://')
    return sep > 0 && origin.slice(sep + 3).toLowerCase() === host.toLowerCase()
  }

  function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy())
    const r = resolve(req)
    if (r === null) {
      if (opts.fallbackUpgrade) return opts.fallbackUpgrade(req, socket, head)
      if (defaultRoute && defaultRoute.hostname !== null) {
        forwarder.ws(
          req,
          socket,
          head,
          context(req, scanRequestHeaders(req.rawHeaders), defaultRoute, '', req.url ?? '/'),
          {
            onOpen() {},
            onClientMessage() {},
            onClose() {},
            onUpstreamError(err) {
              upstreamFailed(err, '_default', req)
            },
          },
        )
        return
      }
      return writeRawStatus(socket, 404)
    }
    if (r.kind !== 'session') return writeRawStatus(socket, 404)
    const heads = scanRequestHeaders(req.rawHeaders)
    const claims = claimsOf(heads.cookie)
    if (!claims) return writeRawStatus(socket, 401)
    const route = table.get(r.id)
    if (!route) return writeRawStatus(socket, 404)
    if (!mayUse(claims, route.entry)) return writeRawStatus(socket, 403)
    const ctx = context(req, heads, route, r.prefix, r.rest, claims)
    if (!originAllowed(heads.origin, ctx.host)) {
      log.warn({ instanceId: r.id, origin: req.headers.origin }, 'cross-origin WebSocket refused')
      return writeRawStatus(socket, 403)
    }
    if (route.entry.state !== 'ready' || route.hostname === null) return writeRawStatus(socket, 503)
    const id = r.id
    let opened = false
    let closed = false
    let handle: Closeable | null = null
    if (socket instanceof Object && 'setNoDelay' in socket)
      (socket as unknown as { setNoDelay(v: boolean): void }).setNoDelay(true)
    handle = forwarder.ws(req, socket, head, ctx, {
      onOpen() {
        opened = true
        metrics.wsOpened()
        touch(id)
      },
      onClientMessage() {
        touch(id)
      },
      onClose() {
        closed = true
        if (handle) untrack(id, handle)
        if (opened) metrics.wsClosed()
      },
      onUpstreamError(err) {
        upstreamFailed(err, id, req)
      },
    })
    if (!closed) track(id, handle)
  }

  let server: http.Server | null = null

  return {
    handleRequest,
    handleUpgrade,
    flushActivity,
    goAway() {
      for (const set of open.values()) for (const c of [...set]) c.goAway?.()
    },
    async listen(port, host) {
      const s = http.createServer(
        { requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000 },
        handleRequest,
      )
      s.on('upgrade', handleUpgrade)
      s.on('clientError', (_err, socket) => {
        if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n')
        else socket.destroy()
      })
      server = s
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject)
        s.listen(port, host, () => {
          s.off('error', reject)
          resolve()
        })
      })
      return s.address() as AddressInfo
    },
    async close() {
      table.close()
      clearInterval(flushTimer)
      for (const set of open.values()) for (const c of [...set]) c.close()
      open.clear()
      if (server) {
        const s = server
        server = null
        s.closeAllConnections()
        await new Promise<void>((resolve) => s.close(() => resolve()))
      }
      forwarder.close()
      await flushActivity()
    },
  }
}

const NO_FIELDS: readonly string[] = Object.freeze([])
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/** One query parameter of a path, or null; cheap when the name is absent. */
function queryParam(rest: string, name: string): string | null {
  const q = rest.indexOf('?')
  if (q < 0 || rest.indexOf(name + '=', q) < 0) return null
  return new URLSearchParams(rest.slice(q + 1)).get(name)
}

function firstValue(v: string | string[] | undefined): string | undefined {
  const s = Array.isArray(v) ? v[0] : v
  return s?.split(',')[0]!.trim() || undefined
}

/** A route's requester as a cookie scope entry: '' for a session without one. */
function scopeOf(requester: string | null | undefined): string {
  return requester ?? ''
}

/** The Host field from raw headers, without building node's headers object. */
function rawHost(raw: readonly string[]): string | undefined {
  for (let i = 0; i < raw.length; i += 2)
    if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') return raw[i + 1]
  return undefined
}

/** A URL for logs: path only; the query (which may hold a launch token) is never logged. */
export function redact(url: string | undefined): string {
  if (!url) return '/'
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q) + '?[redacted]'
}

function errSummary(err: unknown): { message: string; code?: string } {
  if (err instanceof Error) return { message: err.message, code: (err as NodeJS.ErrnoException).code }
  return { message: String(err) }
}
