import http from 'node:http'
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { Agent as UndiciAgent } from 'undici'
import type { Dispatcher } from 'undici'
import { isIdentityHeader } from '../domain/upstream-headers.js'
import type { CompiledRoute } from './route-table.js'

/**
 * Streaming HTTP and WebSocket forwarding. Bodies are streamed both ways, never buffered.
 *
 * HTTP goes upstream through undici's dispatcher with the raw handler interface (`Exchange`):
 * one keep-alive pool per app, no request/response objects or streams per exchange. In the same
 * benchmark run it cost 44 µs of gateway CPU per small request against 64 µs for node:http
 * with a keep-alive Agent and `pipe` (bench/gateway.ts, BENCH_AB). WebSocket upgrades use
 * node:http (`'upgrade'` hands over the socket), then the two sockets are joined directly.
 * Header fields are handled as flat raw lists in one pass (node's lazily built header objects
 * are never created on the hot path). */

/** RFC 9110 §7.6.1: connection-specific fields a proxy must not forward (plus those named in `Connection`). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'trailer',
])

/**
 * The request's header fields, read in one pass over `rawHeaders` (node's lazily built
 * `req.headers` object is never needed on the hot path). `forward` holds the fields to pass on
 * as a flat `[name, value, …]` list, without hop-by-hop fields and without those we set ourselves.
 */
export interface RequestHeads {
  forward: string[]
  host?: string
  cookie?: string
  connection?: string
  upgrade?: string
  contentLength?: string
  transferEncoding?: string
  xForwardedFor?: string
  xForwardedProto?: string
  xForwardedHost?: string
  origin?: string
}

export function scanRequestHeaders(raw: readonly string[]): RequestHeads {
  const h: RequestHeads = { forward: [] }
  const out = h.forward
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    switch (name.length < 4 || name.length > 19 ? '' : name.toLowerCase()) {
      case 'host':
        h.host ??= value
        continue
      case 'cookie':
        h.cookie = h.cookie === undefined ? value : `${h.cookie}; ${value}`
        continue
      case 'connection':
        h.connection = h.connection === undefined ? value : `${h.connection}, ${value}`
        continue
      case 'upgrade':
        h.upgrade = value
        continue
      case 'content-length':
        h.contentLength = value
        out.push(name, value)
        continue
      case 'transfer-encoding':
        h.transferEncoding = value
        continue
      case 'x-forwarded-for':
        h.xForwardedFor = h.xForwardedFor === undefined ? value : `${h.xForwardedFor}, ${value}`
        continue
      case 'x-forwarded-proto':
        h.xForwardedProto ??= value
        continue
      case 'x-forwarded-host':
        h.xForwardedHost ??= value
        continue
      case 'origin':
        h.origin = value
        out.push(name, value)
        continue
      case 'keep-alive':
      case 'proxy-connection':
      case 'trailer':
      case 'expect': // node's server already answered `100-continue`
      case 'x-forwarded-prefix':
      case 'x-rstudio-root-path':
        continue
      default:
        if (name.length === 2 && name.toLowerCase() === 'te') continue
        // Identity claims are the gateway's to make (issue 8): X-Forwarded-User, Remote-User, X-Auth-Request-*, X-Studiopool-*…
        // Underscore spellings too: CGI-style servers (Rook/httpuv, WSGI) read X_Forwarded_User as X-Forwarded-User.
        if (mayClaimIdentity(name) && isIdentityHeader(name.toLowerCase().replaceAll('_', '-'))) continue
        out.push(name, value)
    }
  }
  const extra = connectionTokens(h.connection)
  if (extra !== null) h.forward = dropNamed(out, extra)
  return h
}

/** Every identity field starts with x or r (domain/upstream-headers.ts): one char test before lowercasing. */
function mayClaimIdentity(name: string): boolean {
  const c = name.charCodeAt(0) | 0x20
  return c === 120 /* x */ || c === 114 /* r */
}

function dropNamed(list: string[], names: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < list.length; i += 2) if (!names.includes(list[i]!.toLowerCase())) out.push(list[i]!, list[i + 1]!)
  return out
}

/** What the gateway decided about one request, handed to the forwarder. */
export interface ForwardContext {
  readonly route: CompiledRoute
  /** `/s/{id}` in path mode (no trailing slash); '' in subdomain mode or for the default target. */
  readonly prefix: string
  /** Path and query to request upstream, starting with '/'. */
  readonly path: string
  /** Whether the app sees the prefix stripped (strip mode with a prefix). */
  readonly strip: boolean
  readonly heads: RequestHeads
  /** The client's IP, the scheme and host as the client used them (after trusted X-Forwarded-*). */
  readonly clientIp: string
  readonly proto: string
  readonly host: string
  /** X-Forwarded-For as received from a trusted proxy, or undefined. */
  readonly priorForwardedFor: string | undefined
  /** The request's Cookie header with the gateway's own cookie removed. */
  readonly cookie: string | undefined
  /** Set-Cookie headers with this name are dropped from the app's responses (the app must not replace the gateway's cookie). */
  readonly cookieName: string
  /**
   * Fields the gateway adds for the app, as a flat `[name, value, …]` list: the owner's identity
   * (X-Forwarded-User, -Groups) and the template's upstreamHeaders. Client fields of these names are
   * dropped first. Lowercase names.
   */
  readonly upstream: readonly string[]
}

/** Names listed in a `Connection` header, other than the usual tokens. */
function connectionTokens(value: string | undefined): string[] | null {
  if (!value) return null
  const lower = value.toLowerCase()
  if (lower === 'keep-alive' || lower === 'close' || lower === 'upgrade') return null
  const out: string[] = []
  for (const t of lower.split(',')) {
    const n = t.trim()
    if (n && n !== 'keep-alive' && n !== 'close' && n !== 'upgrade') out.push(n)
  }
  return out.length ? out : null
}

/** The header list sent upstream: the client's fields minus hop-by-hop, plus Host, X-Forwarded-*, X-RStudio-Root-Path. */
export function buildRequestHeaders(ctx: ForwardContext, upgrade: boolean, frameBody = true): string[] {
  // The client's list is this request's own: extended in place, not copied (unless we drop names from it).
  let out = ctx.heads.forward
  const add = ctx.upstream
  if (add.length) {
    // Identity fields were already dropped by scanRequestHeaders; only a template's own names (Authorization…) cost a copy.
    let names: string[] | null = null
    // …and their underscore spellings, which CGI-style servers read as the same field.
    for (let i = 0; i < add.length; i += 2)
      if (!isIdentityHeader(add[i]!)) (names ??= []).push(add[i]!, add[i]!.replaceAll('-', '_'))
    if (names) out = dropNamed(out, names)
    for (let i = 0; i < add.length; i++) out.push(add[i]!)
  }
  out.push('host', ctx.route.entry.hostHeader === 'preserve' ? ctx.host : (ctx.route.targetHost ?? ctx.host))
  out.push('x-forwarded-for', ctx.priorForwardedFor ? `${ctx.priorForwardedFor}, ${ctx.clientIp}` : ctx.clientIp)
  out.push('x-forwarded-proto', ctx.proto, 'x-forwarded-host', ctx.host)
  if (ctx.prefix) out.push('x-forwarded-prefix', ctx.prefix, 'x-rstudio-root-path', ctx.prefix)
  if (ctx.cookie) out.push('cookie', ctx.cookie)
  // The body is re-framed by us: chunked whenever the client did not give a length.
  if (frameBody && ctx.heads.transferEncoding !== undefined && !upgrade) out.push('transfer-encoding', 'chunked')
  if (upgrade) out.push('connection', 'Upgrade', 'upgrade', ctx.heads.upgrade ?? 'websocket')
  return out
}

function rewriteLocation(loc: string, ctx: ForwardContext): string {
  const r = ctx.route
  let path: string | null = null
  if (loc.charCodeAt(0) === 47 /* / */ && loc.charCodeAt(1) !== 47) path = loc
  else if (r.targetOrigin !== null && loc.startsWith(r.targetOrigin)) {
    const rest = loc.slice(r.targetOrigin.length)
    if (rest === '' || rest[0] === '/' || rest[0] === '?' || rest[0] === '#') {
      path = rest === '' || rest[0] !== '/' ? '/' + rest : rest
      path = `${ctx.proto}://${ctx.host}` + (ctx.strip ? ctx.prefix + stripBase(path, r.targetBasePath) : path)
      return path
    }
  }
  if (path === null) return loc
  if (!ctx.strip) return path
  return ctx.prefix + stripBase(path, r.targetBasePath)
}

function stripBase(path: string, base: string): string {
  if (base && (path === base || path.startsWith(base + '/'))) return path.slice(base.length) || '/'
  return path
}

const PATH_ATTR = /;\s*path=([^;]*)/i

/** One Set-Cookie value as the client must see it, or null to drop it. */
function rewriteSetCookie(v: string, ctx: ForwardContext): string | null {
  if (v.trimStart().startsWith(ctx.cookieName + '=')) return null
  if (!ctx.strip) return v
  const m = PATH_ATTR.exec(v)
  if (!m) return v
  const p = stripBase(m[1]!.trim(), ctx.route.targetBasePath)
  return (
    v.slice(0, m.index) + '; Path=' + ctx.prefix + (p.startsWith('/') ? p : '/' + p) + v.slice(m.index + m[0].length)
  )
}

/** The app's response fields for the client: hop-by-hop removed, Location and Set-Cookie rewritten. */
export function buildResponseHeaders(
  raw: readonly (string | Buffer)[],
  ctx: ForwardContext,
): { headers: string[]; eventStream: boolean } {
  const out: string[] = []
  let eventStream = false
  let connection: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!
    const v = raw[i + 1]!
    const name = typeof n === 'string' ? n : n.toString('latin1')
    const value = typeof v === 'string' ? v : v.toString('latin1')
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'connection') connection = connection === undefined ? value : `${connection}, ${value}`
      continue
    }
    if (lower === 'location') out.push(name, rewriteLocation(value, ctx))
    else if (lower === 'set-cookie') {
      const v = rewriteSetCookie(value, ctx)
      if (v !== null) out.push(name, v)
    } else {
      if (lower === 'content-type' && value.startsWith('text/event-stream')) eventStream = true
      out.push(name, value)
    }
  }
  const extra = connectionTokens(connection)
  return { headers: extra === null ? out : dropNamed(out, extra), eventStream }
}

/** One proxied HTTP exchange as the gateway's hooks see it. */
export interface HttpExchange extends Closeable {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly ctx: ForwardContext
  /** `performance.now()` when forwarding began. */
  readonly started: number
  /** The exchange is over (`onDone` was called). */
  readonly done: boolean
}

/**
 * What the gateway wants to hear about an exchange. One object for all exchanges (no
 * per-request closures): each call names the exchange.
 */
export interface ForwardHooks {
  /** Upstream answered with this status (headers are on their way to the client). */
  onResponse(x: HttpExchange, status: number): void
  /** The exchange is over: `status` is what the client got (0 when the client went away first). Called once. */
  onDone(x: HttpExchange, status: number): void
  /** Upstream failed before it answered; the hook sends the error page. */
  onUpstreamError(x: HttpExchange, err: NodeJS.ErrnoException): void
}

/** Something the gateway can close when the route goes away. */
export interface Closeable {
  close(): void
  /**
   * The server is shutting down (issue 9 item 9): a WebSocket sends close frames with 1001 (going
   * away) to both ends, at frame boundaries; a proxied event stream ends cleanly. Other exchanges
   * are left to finish within the shutdown grace.
   */
  goAway?(): void
}

export interface Forwarder {
  http(req: IncomingMessage, res: ServerResponse, ctx: ForwardContext, hooks: ForwardHooks): HttpExchange
  ws(req: IncomingMessage, socket: Duplex, head: Buffer, ctx: ForwardContext, hooks: WsHooks): Closeable
  close(): void
}

export interface WsHooks {
  /** Upstream accepted the upgrade. */
  onOpen(): void
  /** A client→upstream data frame began (text, binary or continuation; not ping/pong/close). */
  onClientMessage(): void
  onClose(): void
  onUpstreamError(err: NodeJS.ErrnoException): void
}

/** undici's error codes as the gateway's (CHP-style) errno codes, for pages, logs and metrics. */
function upstreamError(err: Error): NodeJS.ErrnoException {
  const e = err as NodeJS.ErrnoException
  switch (e.code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return Object.assign(new Error('upstream timed out'), { code: 'ETIMEDOUT' })
    case 'UND_ERR_SOCKET':
      return Object.assign(new Error('upstream closed the connection'), { code: 'ECONNRESET' })
    default:
      return e
  }
}

/**
 * One proxied HTTP exchange over undici's dispatcher (its raw handler interface: no request or
 * response objects, no streams, no per-request closures but the client's close listener).
 * Upstream chunks go to `res.write`; backpressure pauses undici's parser until `drain`.
 */
class Exchange implements HttpExchange {
  readonly started = performance.now()
  status = 0
  done = false
  retried = false
  aborted = false
  abort: ((err?: Error) => void) | null = null
  resume: (() => void) | null = null
  eventStream = false

  constructor(
    readonly dispatcher: Dispatcher,
    readonly options: Dispatcher.DispatchOptions,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly ctx: ForwardContext,
    readonly hooks: ForwardHooks,
    readonly bodiless: boolean,
  ) {}

  start(): void {
    this.dispatcher.dispatch(this.options, this)
  }

  finish(status: number): void {
    if (this.done) return
    this.done = true
    this.hooks.onDone(this, status)
  }

  /** The client went away (or the response ended): stop the upstream side too. */
  clientClosed(): void {
    if (this.res.writableFinished) return
    this.finish(0)
    this.stopUpstream()
  }

  stopUpstream(): void {
    this.aborted = true
    this.abort?.()
  }

  close(): void {
    this.finish(0)
    this.stopUpstream()
    this.res.destroy()
  }

  goAway(): void {
    // An event stream never ends by itself; end ours at a chunk boundary (events are whole writes) and stop upstream.
    if (!this.eventStream || this.done) return
    this.finish(this.status)
    this.res.end()
    this.stopUpstream()
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort
    if (this.aborted) abort()
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void, statusText: string): boolean {
    if (status < 200) return true // 1xx informational: node's server answered `100-continue` itself
    this.status = status
    this.resume = resume
    this.hooks.onResponse(this, status)
    const out = buildResponseHeaders(raw, this.ctx)
    this.res.writeHead(status, statusText, out.headers)
    // Server-sent events: send the head now, not with the first event.
    if (out.eventStream) {
      this.eventStream = true
      this.res.flushHeaders()
    }
    return true
  }

  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true
    this.res.once('drain', this.resume!)
    return false
  }

  onComplete(): void {
    this.res.end()
    this.finish(this.status)
  }

  onError(err: Error): void {
    if (this.done) return
    const e = upstreamError(err)
    const method = this.options.method
    // A kept-alive connection the app had just closed: safe to try once more for a request without a body.
    if (
      !this.retried &&
      this.bodiless &&
      e.code === 'ECONNRESET' &&
      !this.res.headersSent &&
      (method === 'GET' || method === 'HEAD')
    ) {
      this.retried = true
      this.abort = null
      this.start()
      return
    }
    if (this.res.headersSent || this.res.destroyed) {
      this.res.destroy()
      this.finish(0)
      return
    }
    // Let the client's request body go (it may still be arriving), so the connection stays usable.
    if (!this.bodiless && !this.req.readableEnded) this.req.resume()
    this.hooks.onUpstreamError(this, e)
    this.finish(this.res.statusCode)
  }
}

export function createForwarder(opts: { upstreamTimeoutMs: number; maxSockets?: number }): Forwarder {
  const timeout = opts.upstreamTimeoutMs > 0 ? opts.upstreamTimeoutMs : 0
  // undici: one pool per upstream origin; the timeouts are the same idle limits as node's socket timeout.
  const pool = new UndiciAgent({
    connections: opts.maxSockets ?? 512,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: timeout,
    bodyTimeout: timeout,
    connect: { timeout: 10_000 },
  })

  function forwardHttp(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: ForwardContext,
    hooks: ForwardHooks,
  ): HttpExchange {
    const route = ctx.route
    const bodiless =
      (ctx.heads.contentLength === undefined || ctx.heads.contentLength === '0') &&
      ctx.heads.transferEncoding === undefined
    const method = req.method ?? 'GET'
    const x = new Exchange(
      pool,
      {
        origin: route.targetOrigin!,
        path: route.targetBasePath + ctx.path,
        method: method as Dispatcher.HttpMethod,
        headers: buildRequestHeaders(ctx, false, false),
        body: bodiless ? null : req,
      },
      req,
      res,
      ctx,
      hooks,
      bodiless,
    )
    res.on('close', () => x.clientClosed())
    x.start()
    return x
  }

  function forwardWs(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    ctx: ForwardContext,
    hooks: WsHooks,
  ): Closeable {
    const route = ctx.route
    const headers = buildRequestHeaders(ctx, true)
    let upstream: Duplex | null = null
    let closed = false
    const close = () => {
      if (closed) return
      closed = true
      socket.destroy()
      upstream?.destroy()
      preq.destroy()
      hooks.onClose()
    }
    const preq = http.request({
      host: route.hostname!,
      port: route.port,
      method: 'GET',
      path: route.targetBasePath + ctx.path,
      headers,
      agent: false,
    })
    if (timeout)
      preq.setTimeout(timeout, () =>
        preq.destroy(Object.assign(new Error('upstream timed out'), { code: 'ETIMEDOUT' })),
      )
    socket.on('error', close)
    socket.on('close', close)
    preq.on('error', (err: NodeJS.ErrnoException) => {
      if (closed) return
      if (!upstream) {
        hooks.onUpstreamError(err)
        writeRawStatus(socket, err.code === 'ETIMEDOUT' ? 504 : 502)
      }
      close()
    })
    preq.on('response', (pres) => {
      // The app refused the upgrade: relay its answer as-is.
      const lines = [`HTTP/1.1 ${pres.statusCode} ${pres.statusMessage}`]
      const h = buildResponseHeaders(pres.rawHeaders, ctx).headers
      for (let i = 0; i < h.length; i += 2) lines.push(`${h[i]}: ${h[i + 1]}`)
      lines.push('connection: close')
      socket.write(lines.join('\r\n') + '\r\n\r\n')
      pres.pipe(socket)
    })
    preq.on('upgrade', (pres, psock, phead) => {
      if (closed) {
        psock.destroy()
        return
      }
      upstream = psock
      preq.setTimeout(0)
      psock.setTimeout(0)
      psock.setNoDelay(true)
      const lines = [`HTTP/1.1 101 ${pres.statusMessage || 'Switching Protocols'}`]
      const raw = pres.rawHeaders
      for (let i = 0; i < raw.length; i += 2) lines.push(`${raw[i]}: ${raw[i + 1]}`)
      socket.write(lines.join('\r\n') + '\r\n\r\n')
      if (phead.length) socket.write(phead)
      psock.on('error', close)
      psock.on('close', close)
      hooks.onOpen()
      const frames = new WsFrameScanner(() => hooks.onClientMessage())
      // Where each direction's frames begin and end, so that a close frame can be put between two.
      const toUpstream = new WsFrameBoundary()
      const toClient = new WsFrameBoundary()
      if (head.length) {
        frames.feed(head)
        toUpstream.advance(head, false)
        psock.write(head)
      }
      let closedUp = false
      let closedDown = false
      const closeUpstream = () => {
        if (closedUp) return
        closedUp = true
        psock.end(wsCloseFrame(1001, true))
      }
      const closeClient = () => {
        if (closedDown) return
        closedDown = true
        socket.end(wsCloseFrame(1001, false))
      }
      // Both directions by hand: client→upstream to see frame headers (activity), both to know the frame boundaries.
      socket.on('data', (chunk: Buffer) => {
        if (closedUp) return // our close frame went upstream; nothing follows it
        frames.feed(chunk)
        if (leaving) {
          const n = toUpstream.advance(chunk, true)
          if (n > 0) psock.write(chunk.subarray(0, n))
          if (toUpstream.atBoundary) closeUpstream()
          return
        }
        toUpstream.advance(chunk, false)
        if (!psock.write(chunk)) socket.pause()
      })
      psock.on('drain', () => socket.resume())
      psock.on('data', (chunk: Buffer) => {
        if (closedDown) return
        if (leaving) {
          const n = toClient.advance(chunk, true)
          if (n > 0) socket.write(chunk.subarray(0, n))
          if (toClient.atBoundary) closeClient()
          return
        }
        toClient.advance(chunk, false)
        if (!socket.write(chunk)) psock.pause()
      })
      socket.on('drain', () => psock.resume())
      goAwayNow = () => {
        if (toClient.atBoundary) closeClient()
        if (toUpstream.atBoundary) closeUpstream()
        // Mid-frame: the frame's rest is still forwarded (above), then the close frame follows it.
        socket.resume()
        psock.resume()
        // A peer that never finishes its frame or never answers is cut when the grace is over.
      }
      // The server's sockets allow half-open connections: pass a FIN on, then make sure
      // nothing lingers half-closed (a WebSocket's closing handshake is already over by then).
      const linger = () => setTimeout(close, 5_000).unref()
      socket.once('end', () => {
        psock.end()
        linger()
      })
      psock.once('end', linger)
    })
    preq.end()
    let leaving = false
    let goAwayNow: (() => void) | null = null
    return {
      close,
      goAway() {
        if (leaving) return
        leaving = true
        if (goAwayNow) goAwayNow()
        else close() // not upgraded yet: nothing to say goodbye to
      },
    }
  }

  return {
    http: forwardHttp,
    ws: forwardWs,
    close() {
      void pool.destroy()
    },
  }
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}

/** STYLE.md: a WebSocket failure is a raw status line written to the socket. */
export function writeRawStatus(socket: Duplex, status: number): void {
  if (!socket.writable) {
    socket.destroy()
    return
  }
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
}

/**
 * Follows RFC 6455 framing on the client→server byte stream and calls `onData` at the start of
 * every data frame (opcode 0x0–0x7). Control frames (close, ping, pong) are skipped, and
 * payloads are never copied: only frame headers (2–14 bytes) are read, across chunk boundaries.
 */
export class WsFrameScanner {
  #skip = 0
  readonly #hdr = Buffer.alloc(14)
  #hdrLen = 0
  readonly #onData: () => void

  constructor(onData: () => void) {
    this.#onData = onData
  }

  feed(buf: Buffer): void {
    let i = 0
    const n = buf.length
    while (i < n) {
      if (this.#skip > 0) {
        const take = Math.min(this.#skip, n - i)
        this.#skip -= take
        i += take
        continue
      }
      // Collect header bytes until we know the whole header's length and have it.
      while (i < n) {
        this.#hdr[this.#hdrLen++] = buf[i++]!
        if (this.#hdrLen >= 2 && this.#hdrLen === headerLength(this.#hdr)) break
      }
      if (this.#hdrLen < 2 || this.#hdrLen !== headerLength(this.#hdr)) return
      const h = this.#hdr
      const opcode = h[0]! & 0x0f
      const len7 = h[1]! & 0x7f
      let len: number
      if (len7 === 126) len = h.readUInt16BE(2)
      else if (len7 === 127) len = h.readUInt32BE(2) * 2 ** 32 + h.readUInt32BE(6)
      else len = len7
      this.#hdrLen = 0
      this.#skip = len
      if (opcode < 8) this.#onData()
    }
  }
}

/**
 * Tracks RFC 6455 frame boundaries on one direction of a WebSocket byte stream (headers only, no
 * payload copies), so that a close frame can be sent between two frames, never inside one.
 */
export class WsFrameBoundary {
  #skip = 0
  readonly #hdr = Buffer.alloc(14)
  #hdrLen = 0

  /** Between two frames: the next byte would start a new frame. */
  get atBoundary(): boolean {
    return this.#skip === 0 && this.#hdrLen === 0
  }

  /**
   * Follows `buf` and returns how many of its bytes were consumed: all of them, or with
   * `stopAtBoundary`, only those up to the first frame boundary (0 when already at one).
   */
  advance(buf: Buffer, stopAtBoundary: boolean): number {
    let i = 0
    const n = buf.length
    if (stopAtBoundary && this.atBoundary) return 0
    while (i < n) {
      if (this.#skip > 0) {
        const take = Math.min(this.#skip, n - i)
        this.#skip -= take
        i += take
        if (stopAtBoundary && this.atBoundary) return i
        continue
      }
      this.#hdr[this.#hdrLen++] = buf[i++]!
      if (this.#hdrLen < 2 || this.#hdrLen !== headerLength(this.#hdr)) continue
      const len7 = this.#hdr[1]! & 0x7f
      this.#skip =
        len7 === 126
          ? this.#hdr.readUInt16BE(2)
          : len7 === 127
            ? this.#hdr.readUInt32BE(2) * 2 ** 32 + this.#hdr.readUInt32BE(6)
            : len7
      this.#hdrLen = 0
      if (stopAtBoundary && this.atBoundary) return i
    }
    return i
  }
}

/** A close frame with `code`; masked (with a random key) when we speak as the client, to upstream. */
export function wsCloseFrame(code: number, masked: boolean): Buffer {
  const payload = Buffer.from([code >> 8, code & 0xff])
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload])
  const mask = randomBytes(4)
  for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4]
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload])
}

function headerLength(h: Buffer): number {
  const len7 = h[1]! & 0x7f
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (h[1]! & 0x80 ? 4 : 0)
}
