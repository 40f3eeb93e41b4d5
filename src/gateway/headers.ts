import { isIdentityHeader } from '../domain/upstream-headers.js'
import type { CompiledRoute } from './route-table.js'
import type { ResponseRewrite } from './widget-inject.js'

/**
 * Header fields on the way through the gateway, as flat raw lists in one pass (node's lazily
 * built header objects are never created on the hot path): what the client's request carries,
 * what goes upstream, and the app's response fields as the client must see them (hop-by-hop
 * fields removed, Location and Set-Cookie rewritten for the session's path).
 */

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
  /**
   * How many entries of `forward` are the client's, once a header list was built from it (which
   * extends `forward` in place). A request forwarded again — a shared pool's retry on another
   * instance — starts from these, or it would carry our Host and X-Forwarded-* twice.
   */
  clientFields?: number
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
  /** A rewrite of the response (the warning banner's injection, widget-inject.ts); absent = passed as is. */
  readonly rewrite?: ResponseRewrite
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
  // The client's list is this request's own: extended in place, not copied (unless we drop names from
  // it), the first time; a second build (a retry elsewhere) copies the client's part of it.
  const heads = ctx.heads
  let out: string[]
  if (heads.clientFields === undefined) {
    heads.clientFields = heads.forward.length
    out = heads.forward
  } else out = heads.forward.slice(0, heads.clientFields)
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
