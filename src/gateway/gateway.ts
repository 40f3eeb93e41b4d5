import http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { Config } from '../config/types.js'
import type { SessionControls } from '../domain/pending-stop.js'
import type { ActivitySink, NonceLedger, RouteSource, SharedTemplateRoute } from '../domain/routes.js'
import type { SharedGate, SharedLoadSink } from '../domain/shared.js'
import { AccessPolicy } from './access.js'
import { ActivityBatcher } from './activity.js'
import { ConnectionTracker } from './connections.js'
import { ForwardContexts } from './context.js'
import { createForwarder } from './forward.js'
import type { ForwardHooks, Forwarder } from './forward.js'
import { scanRequestHeaders } from './headers.js'
import type { RequestHeads } from './headers.js'
import { LaunchDesk } from './launch.js'
import { createGatewayMetrics, statusClass } from './metrics.js'
import type { GatewayMetrics } from './metrics.js'
import { badGatewayPage, endedPage, forbiddenPage, notFoundPage, unavailablePage } from './pages.js'
import { errSummary, logUpstreamFailure, upstreamStatus, writeRawStatus } from './proxy-errors.js'
import { sendJsonError, sendPage, sendUnauthorized, stateRoutePage } from './responses.js'
import { compileRoute, RouteTable } from './route-table.js'
import type { CompiledRoute } from './route-table.js'
import { firstValid } from './session-cookie.js'
import { SharedRouter } from './shared-router.js'
import { launchToken, rawHost, SessionPaths } from './session-path.js'
import { SessionWsHooks } from './session-ws-hooks.js'
import type { Resolved } from './session-path.js'
import type { SessionClaims, TokenService } from './tokens.js'
import { WidgetDesk } from './widget-desk.js'

export { redact } from './proxy-errors.js'

export interface GatewayOptions {
  readonly config: Config['gateway']
  /** `Config['server']['publicUrl']`: where users reach us; its origin is one of ours (WebSocket Origin check), https there makes cookies Secure. */
  readonly publicUrl: string
  /** `Config['server']['basePath']` (`/studiopool` or ''): requests arrive without it (base-path.ts); session prefixes, cookies and links get it. */
  readonly basePath?: string
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
  /**
   * The warning banner (docs/widget.md): what the gateway may ask and do about a session's pending
   * stop, and `Config['widget']`. Absent (split mode): templates' `injectWidget` has no effect.
   */
  readonly controls?: SessionControls
  readonly widget?: Config['widget']
  /** `mode: shared` templates, served at `/a/<template>/` (issue 14, shared-router.ts). */
  readonly shared?: readonly SharedTemplateRoute[]
  /** Where the shared templates' load goes (the pool in one process). */
  readonly sharedLoad?: SharedLoadSink
  /** Schedules and budgets for shared templates' visitors (the pool in one process; absent in split mode). */
  readonly sharedGate?: SharedGate
}

export interface Gateway {
  /** Whether a Host names a session (subdomain mode): such requests are not under the base path. */
  isSessionHost(host: string | undefined): boolean
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

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * The gateway (architecture.md contract 3), composed of its stations. Decision order for a session
 * request: id format (session-path.ts: 404 without touching the table) → launch token (launch.ts:
 * trade for cookie, redirect to the clean URL) → cookie (session-cookie.ts: 401 login page / JSON)
 * → route (route-table.ts: 404 ended page) → owner or admin (access.ts: 403) → state (progress /
 * paused / ended page) → forward (context.ts, forward.ts; open exchanges in connections.ts,
 * activity in activity.ts). Non-session requests go to `fallback` (the API and dashboard) when
 * given, else to `config.defaultUrl` (the seed's DEFAULT_URL, no login), else a 404 page.
 */
export function createGateway(opts: GatewayOptions): Gateway {
  return new SessionGateway(opts)
}

class SessionGateway implements Gateway {
  readonly #o: GatewayOptions
  readonly #log: Logger
  readonly #metrics: GatewayMetrics
  readonly #dashboardUrl: string
  readonly #loginBase: string
  readonly #paths: SessionPaths
  readonly #access: AccessPolicy
  readonly #contexts: ForwardContexts
  readonly #launch: LaunchDesk
  readonly #defaultRoute: CompiledRoute | null
  readonly #forwarder: Forwarder
  readonly #open = new ConnectionTracker()
  readonly #table: RouteTable
  readonly #activity: ActivityBatcher
  readonly #widget: WidgetDesk | null
  readonly #shared: SharedRouter
  #server: http.Server | null = null

  constructor(opts: GatewayOptions) {
    const cfg = opts.config
    this.#o = opts
    this.#log = opts.log
    this.#metrics = createGatewayMetrics(opts.metrics)
    const publicBase = opts.publicUrl.replace(/\/+$/, '')
    this.#dashboardUrl = publicBase + '/'
    const l = opts.dashboardLoginUrl ?? '/login'
    this.#loginBase = l.startsWith('/') ? new URL(publicBase).origin + (opts.basePath ?? '') + l : l
    this.#paths = new SessionPaths(cfg, opts.publicUrl, opts.basePath ?? '')
    this.#access = new AccessPolicy({
      adminAccess: cfg.adminAccess,
      publicUrl: opts.publicUrl,
      allowedOrigins: cfg.allowedOrigins,
      trustProxy: opts.trustProxy ?? [],
    })
    this.#defaultRoute = cfg.defaultUrl ? defaultTarget(cfg.defaultUrl) : null
    this.#contexts = new ForwardContexts(opts.tokens, this.#access, cfg.cookieName, this.#defaultRoute)
    this.#forwarder = createForwarder({ upstreamTimeoutMs: cfg.upstreamTimeoutMs })
    this.#table = new RouteTable({
      routeToReplace: cfg.routeToReplace,
      stringToReplace: cfg.stringToReplace,
      onDrop: ({ instanceId, reason }) => {
        const connections = this.#open.count(instanceId)
        if (connections === 0) return
        this.#log.info({ instanceId, reason, connections }, 'closing connections of a dropped route')
        this.#open.closeInstance(instanceId)
      },
    })
    this.#launch = new LaunchDesk({
      tokens: opts.tokens,
      nonces: opts.nonces,
      log: opts.log,
      paths: this.#paths,
      access: this.#access,
      table: this.#table,
      cookieName: cfg.cookieName,
      // Subdomain mode: the session's own host, at its root; path mode: only below our prefix.
      cookiePath: this.#paths.subdomain === null ? (opts.basePath ?? '') + '/' : '/',
      secureCookie: new URL(opts.publicUrl).protocol === 'https:',
      dashboardUrl: this.#dashboardUrl,
      unauthorized: (req, res, id, rest, message) => this.#unauthorized(req, res, id, rest, message),
    })
    this.#table.follow(opts.routes)
    this.#activity = new ActivityBatcher(opts.activity, this.#metrics, opts.log)
    this.#activity.start(cfg.activityFlushMs)
    this.#widget = opts.controls
      ? new WidgetDesk({
          controls: opts.controls,
          tokens: opts.tokens,
          access: this.#access,
          pollMs: opts.widget?.pollMs ?? 15_000,
          log: opts.log,
        })
      : null
    this.#shared = new SharedRouter({
      templates: opts.shared ?? [],
      table: this.#table,
      forwarder: this.#forwarder,
      contexts: this.#contexts,
      access: this.#access,
      activity: this.#activity,
      open: this.#open,
      claims: (heads) => this.#claims(heads),
      loginUrl: (next) => `${this.#loginBase}?next=${encodeURIComponent(next)}`,
      publicBase,
      basePath: opts.basePath ?? '',
      cookieName: cfg.cookieName,
      secureCookie: new URL(opts.publicUrl).protocol === 'https:',
      dashboardUrl: this.#dashboardUrl,
      sink: opts.sharedLoad,
      gate: opts.sharedGate,
      log: opts.log,
      registry: opts.metrics,
      upstreamFailed: (err, id, req) =>
        this.#upstreamFailed(err, id, this.#table.get(id)?.entry.template ?? '_shared', req),
    })
  }

  /** Whether a Host names a session (subdomain mode): such requests are not under the base path. */
  readonly isSessionHost = (host: string | undefined): boolean => this.#paths.isSessionHost(host)

  readonly handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const r = this.#resolve(req)
    if (r === null) return this.#notSession(req, res)
    if (r.kind === 'bad-id') return sendPage(res, notFoundPage(this.#dashboardUrl))
    if (r.kind === 'redirect') {
      res.writeHead(302, { location: r.location, 'cache-control': 'no-store' })
      res.end()
      return
    }
    const { id, rest } = r
    const token = launchToken(rest)
    if (token !== null) {
      this.#launch.redeem(req, res, id, rest, token).catch((err: unknown) => {
        this.#log.error({ err: errSummary(err), instanceId: id }, 'launch failed')
        if (!res.headersSent) sendPage(res, unavailablePage('Something went wrong while opening the session.'))
      })
      return
    }
    const heads = scanRequestHeaders(req.rawHeaders)
    const claims = this.#claims(heads)
    if (!claims) return this.#unauthorized(req, res, id, rest)
    const route = this.#table.get(id)
    if (!route) return sendPage(res, endedPage(this.#dashboardUrl))
    const e = route.entry
    if (!this.#access.mayUse(claims, e))
      return sendPage(res, forbiddenPage(this.#dashboardUrl, claims.userId === e.ownerId))
    const widget = e.injectWidget ? this.#widget : null
    if (widget && WidgetDesk.isWidgetPath(rest)) return widget.handle(req, res, heads, route, rest, claims)
    if (e.state !== 'ready' || route.hostname === null) return sendPage(res, stateRoutePage(e, this.#dashboardUrl))
    if (e.upstreamHeaders && !SAFE_METHODS.has(req.method ?? 'GET') && !this.#access.fromOwnPage(req, heads)) {
      this.#log.info({ instanceId: id, origin: heads.origin }, 'cross-origin request to an app-token session refused')
      sendJsonError(res, 403, 'FORBIDDEN', 'a request from another site to this session was refused')
      req.resume()
      return
    }
    const ctx = this.#contexts.build(req, heads, route, r.prefix, rest, claims)
    const rewrite = widget?.rewriteFor(req, ctx)
    const x = this.#forwarder.http(req, res, rewrite ? { ...ctx, rewrite } : ctx, this.#sessionHooks)
    // Tracked only while open: a synchronous failure has already called onDone.
    if (!x.done) this.#open.track(id, x)
  }

  readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy())
    const r = this.#resolve(req)
    if (r === null) return this.#notSessionUpgrade(req, socket, head)
    if (r.kind !== 'session') return writeRawStatus(socket, 404)
    const heads = scanRequestHeaders(req.rawHeaders)
    const claims = this.#claims(heads)
    if (!claims) return writeRawStatus(socket, 401)
    const route = this.#table.get(r.id)
    if (!route) return writeRawStatus(socket, 404)
    if (!this.#access.mayUse(claims, route.entry)) return writeRawStatus(socket, 403)
    const ctx = this.#contexts.build(req, heads, route, r.prefix, r.rest, claims)
    if (!this.#access.originAllowed(heads.origin, ctx.host)) {
      this.#log.warn({ instanceId: r.id, origin: heads.origin }, 'cross-origin WebSocket refused')
      return writeRawStatus(socket, 403)
    }
    if (route.entry.state !== 'ready' || route.hostname === null) return writeRawStatus(socket, 503)
    const id = r.id
    if ('setNoDelay' in socket) (socket as unknown as { setNoDelay(v: boolean): void }).setNoDelay(true)
    const hooks = new SessionWsHooks(
      id,
      route.entry.template,
      req,
      this.#activity,
      this.#metrics,
      this.#open,
      this.#upstreamFailed,
    )
    const handle = this.#forwarder.ws(req, socket, head, ctx, hooks)
    hooks.opened(handle)
  }

  flushActivity(): Promise<void> {
    return this.#activity.flush()
  }

  goAway(): void {
    this.#open.goAway()
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    const s = http.createServer(
      { requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000 },
      this.handleRequest,
    )
    s.on('upgrade', this.handleUpgrade)
    s.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n')
      else socket.destroy()
    })
    this.#server = s
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.listen(port, host, () => {
        s.off('error', reject)
        resolve()
      })
    })
    return s.address() as AddressInfo
  }

  async close(): Promise<void> {
    this.#shared.close()
    this.#table.close()
    this.#activity.stop()
    this.#open.closeAll()
    if (this.#server) {
      const s = this.#server
      this.#server = null
      s.closeAllConnections()
      await new Promise<void>((resolve) => s.close(() => resolve()))
    }
    this.#forwarder.close()
    await this.#activity.flush()
  }

  #resolve(req: IncomingMessage): Resolved {
    return this.#paths.resolve(req.url ?? '/', this.#paths.subdomain !== null ? rawHost(req.rawHeaders) : undefined)
  }

  #claims(heads: RequestHeads): SessionClaims | undefined {
    return firstValid(heads.cookie, this.#o.config.cookieName, (v) => this.#o.tokens.verifySession(v))?.claims
  }

  #unauthorized(req: IncomingMessage, res: ServerResponse, id: string, rest: string, message?: string): void {
    const login = (next: string) => `${this.#loginBase}?next=${encodeURIComponent(next)}`
    sendUnauthorized(req, res, login, this.#paths.cleanUrl(id, rest), message)
  }

  readonly #upstreamFailed = (err: NodeJS.ErrnoException, id: string, template: string, req: IncomingMessage): void => {
    this.#metrics.upstreamError(template, logUpstreamFailure(this.#log, err, id, req.url))
  }

  /** Hooks shared by every proxied session request (no per-request closures). */
  readonly #sessionHooks: ForwardHooks = {
    onResponse: (x, status) => {
      // architecture.md conventions (after CHP): only successful exchanges count as activity; the app's own keep-alive
      // polling (the template's activityIgnore paths, relative to the session root) does not.
      if (status >= 300) return
      const ignore = x.ctx.route.activityIgnore
      if (ignore) {
        const rel = x.ctx.strip ? x.ctx.path : x.ctx.path.slice(x.ctx.prefix.length)
        const q = rel.indexOf('?')
        if (ignore.test(q < 0 ? rel : rel.slice(0, q))) return
      }
      this.#activity.touch(x.ctx.route.entry.instanceId)
    },
    onDone: (x, status) => {
      this.#open.untrack(x.ctx.route.entry.instanceId, x)
      this.#metrics.request(x.ctx.route.entry.template, statusClass(status), (performance.now() - x.started) / 1000)
    },
    onUpstreamError: (x, err) => {
      this.#upstreamFailed(err, x.ctx.route.entry.instanceId, x.ctx.route.entry.template, x.req)
      sendPage(x.res, badGatewayPage(upstreamStatus(err), this.#dashboardUrl))
    },
  }

  /** The seed's DEFAULT_URL target: no activity, no metrics. */
  readonly #defaultHooks: ForwardHooks = {
    onResponse() {},
    onDone() {},
    onUpstreamError: (x, err) => {
      this.#upstreamFailed(err, '_default', '_default', x.req)
      sendPage(x.res, badGatewayPage(502, this.#dashboardUrl))
    },
  }

  #notSession(req: IncomingMessage, res: ServerResponse): void {
    if (this.#shared.handleRequest(req, res)) return
    if (this.#o.probes?.(req, res)) return
    if (this.#o.fallback) return this.#o.fallback(req, res)
    const d = this.#defaultRoute
    if (d && d.hostname !== null) {
      const ctx = this.#contexts.build(req, scanRequestHeaders(req.rawHeaders), d, '', req.url ?? '/')
      this.#forwarder.http(req, res, ctx, this.#defaultHooks)
      return
    }
    sendPage(res, notFoundPage(this.#dashboardUrl))
  }

  #notSessionUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.#shared.handleUpgrade(req, socket, head)) return
    if (this.#o.fallbackUpgrade) return this.#o.fallbackUpgrade(req, socket, head)
    const d = this.#defaultRoute
    if (!d || d.hostname === null) return writeRawStatus(socket, 404)
    const ctx = this.#contexts.build(req, scanRequestHeaders(req.rawHeaders), d, '', req.url ?? '/')
    this.#forwarder.ws(req, socket, head, ctx, {
      onOpen() {},
      onClientMessage() {},
      onClose() {},
      onUpstreamError: (err) => this.#upstreamFailed(err, '_default', '_default', req),
    })
  }
}

/** The seed's DEFAULT_URL as a route: no owner, no login, path kept. */
function defaultTarget(address: string): CompiledRoute {
  return compileRoute({
    instanceId: '_default',
    ownerId: null,
    template: '_default',
    state: 'ready',
    address,
    pathMode: 'keep',
    hostHeader: 'target',
    progress: 100,
    progressMessage: '',
    queuePosition: null,
    generation: 0,
    failureReason: null,
  })
}
