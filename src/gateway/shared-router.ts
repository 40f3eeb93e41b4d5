import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { isInstanceId } from '../domain/ids.js'
import type { SharedTemplateRoute } from '../domain/routes.js'
import type { SharedGate, SharedLoadSink, SharedRefusal } from '../domain/shared.js'
import { headerSafe } from '../domain/upstream-headers.js'
import type { AccessPolicy } from './access.js'
import type { ActivityBatcher } from './activity.js'
import type { ConnectionTracker } from './connections.js'
import type { ForwardContexts } from './context.js'
import type { ForwardContext, ForwardHooks, Forwarder, HttpExchange, RequestHeads } from './forward.js'
import { scanRequestHeaders } from './headers.js'
import { forbiddenPage } from './pages.js'
import { writeRawStatus } from './proxy-errors.js'
import { sendPage, sendUnauthorized } from './responses.js'
import type { CompiledRoute, RouteTable } from './route-table.js'
import { SharedBook, type Waiter } from './shared-book.js'
import { createSharedMetrics, type SharedMetrics } from './shared-metrics.js'
import { retryOrFail, sendBusy, sendRefusal, startingPage } from './shared-responses.js'
import { cookieValues, setCookie, withoutCookie } from './session-cookie.js'
import type { SessionClaims } from './tokens.js'
import type { Registry } from 'prom-client'

export interface SharedRouterDeps {
  readonly templates: readonly SharedTemplateRoute[]
  readonly table: RouteTable
  readonly forwarder: Forwarder
  readonly contexts: ForwardContexts
  readonly access: AccessPolicy
  readonly activity: ActivityBatcher
  readonly open: ConnectionTracker
  readonly claims: (heads: RequestHeads) => SessionClaims | undefined
  /** The login page's address, coming back to `next`. */
  readonly loginUrl: (next: string) => string
  readonly publicBase: string
  /** `Config['server']['basePath']`: before `/a/<template>` in what the browser sees (prefix, cookie Path). */
  readonly basePath: string
  readonly cookieName: string
  readonly secureCookie: boolean
  readonly dashboardUrl: string
  readonly sink?: SharedLoadSink
  /** Schedules and budgets: asked for a visitor not already on an instance (absent: everyone allowed). */
  readonly gate?: SharedGate
  readonly log: Logger
  readonly registry?: Registry
  readonly upstreamFailed: (err: NodeJS.ErrnoException, id: string, req: IncomingMessage) => void
  readonly now?: () => number
  /** How often the load goes to the pool (ms). */
  readonly reportMs?: number
}

/** A request for `/a/<template>/…`: the template, and the path below its root. */
interface SharedPath {
  readonly t: SharedTemplateRoute
  readonly rest: string
}

/**
 * Idempotent methods (RFC 9110 §9.2.2) without a body are retried once on another instance when
 * theirs failed before answering; any bodiless request whose connection was refused too.
 */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'])

/**
 * Shared app pools at `/a/<template>/` (issue 14, docs/shared-pools.md): any signed-in user the
 * template allows (a dashboard login; admins) reaches one of its instances. Sticky routing pins a
 * user to one instance with a routing cookie while it lives (Shiny keeps each session's state in
 * its R process), never to a draining one unless already there; per-request routing sends each
 * request to the instance with the fewest requests in flight, queues (bounded, with a timeout)
 * when all are at their cap, and retries an idempotent request once on another instance when
 * its own failed before answering. The load goes to the pool (`sink`), which scales.
 */
export class SharedRouter {
  readonly #d: SharedRouterDeps
  readonly #templates: Map<string, SharedTemplateRoute>
  readonly #book: SharedBook
  readonly #metrics: SharedMetrics
  readonly #sticky: string
  readonly #retried = new WeakSet<IncomingMessage>()
  /** What a forwarded request needs to be sent again elsewhere. */
  readonly #requests = new WeakMap<IncomingMessage, { p: SharedPath; claims: SessionClaims; heads: RequestHeads }>()
  readonly #now: () => number
  #timer: NodeJS.Timeout | undefined

  constructor(d: SharedRouterDeps) {
    this.#d = d
    this.#templates = new Map(d.templates.map((t) => [t.name, t]))
    this.#now = d.now ?? Date.now
    this.#book = new SharedBook(this.#now)
    this.#metrics = createSharedMetrics(d.registry)
    this.#sticky = `${d.cookieName}_a`
    if (this.#templates.size > 0) {
      this.#timer = setInterval(() => this.tick(), Math.min(250, d.reportMs ?? 1000))
      this.#timer.unref()
    }
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer)
    for (const t of this.#templates.values()) for (const w of this.#book.expired(t.name, -1)) w.fail('closed')
  }

  #lastReport = 0

  /** Queue timeouts and pumping (a route became ready), and the report to the pool once per reportMs. */
  tick(): void {
    for (const t of this.#templates.values()) {
      if (t.routing !== 'per-request') continue
      for (const w of this.#book.expired(t.name, t.queueTimeoutMs)) w.fail('timeout')
      this.#pump(t)
    }
    if (this.#now() - this.#lastReport >= (this.#d.reportMs ?? 1000)) this.report()
  }

  /** Sends every shared template's load to the pool now. */
  report(): void {
    this.#lastReport = this.#now()
    const live = new Set<string>()
    const loads = [...this.#templates.values()].map((t) => {
      const routes = [...this.#d.table.sharedRoutes(t.name)]
      for (const r of routes) live.add(r.entry.instanceId)
      const l = this.#book.load(t.name, routes, t.routing === 'per-request')
      this.#metrics.observe(l)
      return l
    })
    this.#book.prune(live)
    try {
      this.#d.sink?.reportSharedLoad(loads)
    } catch (err) {
      this.#d.log.warn({ err: (err as Error).message }, 'shared load report failed')
    }
  }

  /** `/a/…`: handled here (true), or not a shared path (false). */
  handleRequest(req: IncomingMessage, res: ServerResponse): boolean {
    const p = this.#path(req, res)
    if (p === undefined) return false
    if (p === null) return true
    const heads = scanRequestHeaders(req.rawHeaders)
    const claims = this.#claims(req, res, heads, p)
    if (!claims) return true
    const refused = this.#refused(p.t, heads, claims)
    if (refused) {
      sendRefusal(req, res, refused, this.#d.dashboardUrl)
      return true
    }
    if (p.t.routing === 'per-request') this.#perRequest(req, res, heads, p, claims)
    else this.#stickyRequest(req, res, heads, p, claims)
    return true
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const url = req.url ?? '/'
    if (!url.startsWith('/a/')) return false
    const p = this.#parse(url)
    if (!p || p === 'redirect') return (writeRawStatus(socket, 404), true)
    const heads = scanRequestHeaders(req.rawHeaders)
    const claims = this.#d.claims(heads)
    if (!claims) return (writeRawStatus(socket, 401), true)
    if (!this.#allowed(p.t, claims)) return (writeRawStatus(socket, 403), true)
    const refused = this.#refused(p.t, heads, claims)
    if (refused) return (writeRawStatus(socket, refused.status), true)
    const route =
      this.#stickyRoute(p.t, heads) ?? this.#choose(p.t, p.t.routing === 'per-request' ? 'outstanding' : 'seats')
    if (!route) return (writeRawStatus(socket, 503), true)
    const ctx = this.#context(req, heads, route, p, claims)
    if (!this.#d.access.originAllowed(heads.origin, ctx.host)) {
      this.#d.log.warn({ template: p.t.name, origin: heads.origin }, 'cross-origin WebSocket to a shared app refused')
      return (writeRawStatus(socket, 403), true)
    }
    if ('setNoDelay' in socket) (socket as unknown as { setNoDelay(v: boolean): void }).setNoDelay(true)
    this.#tunnel(req, socket, head, ctx, route, claims.userId)
    return true
  }

  #tunnel(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    ctx: ForwardContext,
    route: CompiledRoute,
    userId: string,
  ): void {
    const { activity, open } = this.#d
    const id = route.entry.instanceId
    let handle: { close(): void } | null = null
    let opened = false
    let closed = false
    this.#book.began(route, userId)
    handle = this.#d.forwarder.ws(req, socket, head, ctx, {
      onOpen: () => {
        opened = true
        this.#book.wsOpened(route, userId)
        activity.touch(id)
      },
      onClientMessage: () => activity.touch(id),
      onClose: () => {
        if (closed) return
        closed = true
        if (opened) this.#book.wsClosed(route, userId)
        this.#book.ended(route)
        if (handle) open.untrack(id, handle)
      },
      onUpstreamError: (err) => {
        this.#book.avoid(route)
        this.#d.upstreamFailed(err, id, req)
      },
    })
    if (!closed) open.track(id, handle)
  }

  /** undefined: not ours (no such shared template); null: answered here (the redirect to the slash). */
  #path(req: IncomingMessage, res: ServerResponse): SharedPath | null | undefined {
    const url = req.url ?? '/'
    if (!url.startsWith('/a/')) return undefined
    const p = this.#parse(url)
    if (p === 'redirect') {
      res.writeHead(302, { location: url.replace(/^(\/a\/[^/?#]+)/, '$1/'), 'cache-control': 'no-store' })
      res.end()
      return null
    }
    // Not a shared template: not ours (the dashboard's 404, or the seed's DEFAULT_URL, answers it).
    return p ?? undefined
  }

  #parse(url: string): SharedPath | 'redirect' | undefined {
    const end = url.slice(3).search(/[/?#]/)
    const name = end < 0 ? url.slice(3) : url.slice(3, 3 + end)
    const t = this.#templates.get(name)
    if (!t) return undefined
    const rest = url.slice(3 + name.length)
    if (!rest.startsWith('/')) return 'redirect'
    return { t, rest }
  }

  #claims(req: IncomingMessage, res: ServerResponse, heads: RequestHeads, p: SharedPath): SessionClaims | undefined {
    const claims = this.#d.claims(heads)
    if (!claims) {
      sendUnauthorized(req, res, this.#d.loginUrl, `${this.#d.publicBase}/a/${p.t.name}${p.rest}`)
      req.resume()
      return undefined
    }
    if (!this.#allowed(p.t, claims)) {
      sendPage(res, forbiddenPage(this.#d.dashboardUrl))
      req.resume()
      return undefined
    }
    return claims
  }

  /**
   * A new visitor refused by the pool (outside an `unavailable` schedule, a hard budget exceeded).
   * Someone already on a running instance of a sticky app stays there: like a dedicated session,
   * what runs is not cut off by the refusal (a budget's `stopRunning` and the schedule's closing
   * drain instances, with warnings). Every request to a per-request API is a new use.
   */
  #refused(t: SharedTemplateRoute, heads: RequestHeads, claims: SessionClaims): SharedRefusal | null {
    if (!this.#d.gate) return null
    if (t.routing === 'sticky' && this.#stickyRoute(t, heads)) return null
    return this.#d.gate.admit(t.name, claims.userId, claims.groups)
  }

  /** A dashboard login (not a requester's launch cookie) of a user in the template's groups, or an admin. */
  #allowed(t: SharedTemplateRoute, c: SessionClaims): boolean {
    if (c.admin) return true
    if (c.requesters !== undefined) return false
    return t.allowedGroups.length === 0 || t.allowedGroups.some((g) => c.groups.includes(g))
  }

  // --- sticky routing -------------------------------------------------------------------------

  #stickyRequest(
    req: IncomingMessage,
    res: ServerResponse,
    heads: RequestHeads,
    p: SharedPath,
    claims: SessionClaims,
  ): void {
    const pinned = this.#stickyRoute(p.t, heads)
    const route = pinned ?? this.#choose(p.t, 'seats')
    if (!route) {
      if (this.#book.wait(p.t.name, claims.userId)) this.report() // the first one waiting: the pool hears at once
      sendPage(res, startingPage(p.t, this.#d.table.sharedRoutes(p.t.name)))
      req.resume()
      return
    }
    this.#book.served(p.t.name, claims.userId)
    this.#book.pin(route, claims.userId)
    if (!pinned) {
      const cookie = setCookie(this.#sticky, route.entry.instanceId, {
        path: `${this.#d.basePath}/a/${p.t.name}/`,
        maxAgeSeconds: 86_400,
        secure: this.#d.secureCookie,
      })
      res.setHeader('set-cookie', cookie)
    }
    this.#forward(req, res, heads, route, p, claims)
  }

  /** The instance the routing cookie names, while it lives and runs (draining included: its users stay). */
  #stickyRoute(t: SharedTemplateRoute, heads: RequestHeads): CompiledRoute | undefined {
    for (const id of cookieValues(heads.cookie, this.#sticky)) {
      if (!isInstanceId(id)) continue
      const r = this.#d.table.get(id)
      if (r?.entry.shared && r.entry.template === t.name && r.entry.state === 'ready' && r.hostname !== null) return r
    }
    return undefined
  }

  /**
   * The least loaded running instance that takes new users and has room, or undefined. One that
   * failed a request lately only when no other runs at all (else the request waits), never `except`.
   */
  #choose(t: SharedTemplateRoute, by: 'seats' | 'outstanding', except?: string): CompiledRoute | undefined {
    let best: CompiledRoute | undefined
    let bestLoad = Infinity
    let healthy = 0
    let fallback: CompiledRoute | undefined
    for (const r of this.#d.table.sharedRoutes(t.name)) {
      const e = r.entry
      if (e.state !== 'ready' || r.hostname === null || e.shared?.draining || e.instanceId === except) continue
      if (this.#book.avoided(r)) {
        fallback ??= r
        continue
      }
      healthy++
      const load = by === 'seats' ? this.#book.seats(r) : this.#book.outstanding(r)
      if (load >= t.maxConnectionsPerInstance) continue
      if (load < bestLoad) {
        best = r
        bestLoad = load
      }
    }
    if (best || healthy > 0 || !fallback) return best
    const load = by === 'seats' ? this.#book.seats(fallback) : this.#book.outstanding(fallback)
    return load < t.maxConnectionsPerInstance ? fallback : undefined
  }

  // --- per-request routing --------------------------------------------------------------------

  #perRequest(req: IncomingMessage, res: ServerResponse, heads: RequestHeads, p: SharedPath, claims: SessionClaims) {
    const route = this.#choose(p.t, 'outstanding')
    if (route) return this.#forward(req, res, heads, route, p, claims)
    this.#enqueue(req, res, heads, p, claims)
  }

  /** Every instance is at its cap (or none runs yet): the bounded queue, 503 when full or after the timeout. */
  #enqueue(
    req: IncomingMessage,
    res: ServerResponse,
    heads: RequestHeads,
    p: SharedPath,
    claims: SessionClaims,
    except?: string,
  ) {
    const w: Waiter = {
      since: this.#now(),
      except,
      go: (r) => this.#forward(req, res, heads, r, p, claims),
      fail: (why) => {
        if (why === 'closed' || res.writableEnded) return void res.destroy()
        this.#metrics.rejected(p.t.name)
        sendBusy(req, res, p.t, 'timeout')
      },
    }
    if (!this.#book.enqueue(p.t.name, w, p.t.queueSize)) {
      this.#metrics.rejected(p.t.name)
      return sendBusy(req, res, p.t, 'full')
    }
    if (this.#book.queueLength(p.t.name) === 1) this.report() // the pool hears of the first one waiting at once
    res.on('close', () => this.#book.remove(p.t.name, w))
  }

  /** Hands queued requests to instances with room, oldest first. */
  #pump(t: SharedTemplateRoute): void {
    for (let w = this.#book.peek(t.name); w; w = this.#book.peek(t.name)) {
      const r = this.#choose(t, 'outstanding', w.except)
      if (!r) return
      this.#book.dequeue(t.name)!.go(r)
    }
  }

  // --- forwarding -----------------------------------------------------------------------------

  #context(
    req: IncomingMessage,
    heads: RequestHeads,
    route: CompiledRoute,
    p: SharedPath,
    claims: SessionClaims,
  ): ForwardContext {
    const ctx = this.#d.contexts.build(req, heads, route, `${this.#d.basePath}/a/${p.t.name}`, p.rest, claims)
    // The app learns who the user is (as for a dedicated session's owner); our cookies stay with us.
    const upstream = ['x-forwarded-user', headerSafe(claims.userId)]
    if (claims.groups.length) upstream.push('x-forwarded-groups', headerSafe(claims.groups.join(',')))
    return { ...ctx, cookie: withoutCookie(ctx.cookie, this.#sticky), upstream }
  }

  #forward(
    req: IncomingMessage,
    res: ServerResponse,
    heads: RequestHeads,
    route: CompiledRoute,
    p: SharedPath,
    claims: SessionClaims,
  ): void {
    this.#book.began(route, claims.userId)
    const x = this.#d.forwarder.http(req, res, this.#context(req, heads, route, p, claims), this.#hooks)
    if (!x.done) this.#d.open.track(route.entry.instanceId, x)
    this.#requests.set(req, { p, claims, heads })
  }

  readonly #hooks: ForwardHooks = {
    onResponse: (x, status) => {
      if (status < 300) this.#d.activity.touch(x.ctx.route.entry.instanceId)
    },
    onDone: (x) => {
      this.#d.open.untrack(x.ctx.route.entry.instanceId, x)
      this.#book.ended(x.ctx.route)
      const t = this.#templates.get(x.ctx.route.entry.template)
      if (t?.routing === 'per-request') this.#pump(t)
    },
    onUpstreamError: (x, err) => this.#upstreamError(x, err),
  }

  /** The instance failed before answering: another one for an idempotent request (once), else a clear error. */
  #upstreamError(x: HttpExchange, err: NodeJS.ErrnoException): void {
    const route = x.ctx.route
    this.#book.avoid(route)
    this.#d.upstreamFailed(err, route.entry.instanceId, x.req)
    const info = this.#requests.get(x.req)
    const method = x.req.method ?? 'GET'
    const t = this.#templates.get(route.entry.template)
    const retry =
      t && info && !this.#retried.has(x.req) && bodiless(x.ctx.heads) && (IDEMPOTENT.has(method) || neverSent(err))
    const perRequest = t?.routing === 'per-request'
    this.#d.log.debug(
      { instanceId: route.entry.instanceId, retry, retried: this.#retried.has(x.req) },
      'shared upstream failure',
    )
    const again = retry ? this.#choose(t, perRequest ? 'outstanding' : 'seats', route.entry.instanceId) : undefined
    // No other instance has room now: a per-request retry waits in the queue like a new request.
    if (retry && !again && perRequest) {
      this.#retried.add(x.req)
      this.#metrics.retry(t.name, 'retried')
      return this.#enqueue(x.req, x.res, info.heads, info.p, info.claims, route.entry.instanceId)
    }
    retryOrFail(x, again, t?.routing ?? 'sticky', method, this.#metrics, route.entry.template, this.#d.dashboardUrl)
    if (again && info) {
      this.#retried.add(x.req)
      this.#forward(x.req, x.res, info.heads, again, info.p, info.claims)
    }
  }
}

/** No connection was made (refused, host or network gone): the app never saw the request, so even a POST may go elsewhere. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH'])
function neverSent(err: NodeJS.ErrnoException): boolean {
  return NOT_CONNECTED.has(err.code ?? '')
}

function bodiless(h: RequestHeads): boolean {
  return (h.contentLength === undefined || h.contentLength === '0') && h.transferEncoding === undefined
}
