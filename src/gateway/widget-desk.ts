import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { AppError } from '../domain/errors.js'
import type { SessionControls } from '../domain/pending-stop.js'
import type { RouteEntry } from '../domain/routes.js'
import type { AccessPolicy } from './access.js'
import type { ForwardContext, RequestHeads } from './headers.js'
import { errSummary } from './proxy-errors.js'
import { sendJsonError } from './responses.js'
import type { CompiledRoute } from './route-table.js'
import type { SessionClaims, TokenService } from './tokens.js'
import { unsuffixIfNoneMatch, WidgetRewrite } from './widget-inject.js'
import { WIDGET_SCRIPT } from './widget-script.js'

/** The reserved directory inside every opted-in session (relative to the session root). */
export const WIDGET_DIR = '/.studiopool/'

export interface WidgetDeskOptions {
  /** What the gateway may ask and do about a session's pending stop (the pool, wired by main). */
  readonly controls: SessionControls
  readonly tokens: TokenService
  readonly access: AccessPolicy
  /** `widget.poll`: how often the banner asks for the status. */
  readonly pollMs: number
  readonly log: Logger
}

const SCRIPT_ETAG = `"${createHash('sha256').update(WIDGET_SCRIPT).digest('base64url').slice(0, 16)}"`
const ACTIONS = new Set(['keep', 'stop', 'suspend'])

/**
 * The warning banner's station in the gateway (docs/widget.md), for templates with `injectWidget`:
 * answers `<session>/.studiopool/{widget.js,status,keep,stop,suspend}` itself (after the cookie and
 * owner checks, never forwarded, never counted as activity but for `keep`), and decides for each
 * forwarded request whether its response gets the banner (`rewriteFor`).
 *
 * The POSTs are CSRF-safe twice: they must come from the session's own pages (Sec-Fetch-Site,
 * Origin: `AccessPolicy.fromOwnPage`) and carry the per-session widget token (an HMAC of the
 * session and user under the instance's app token) that only `status`, a same-origin read, hands out.
 */
export class WidgetDesk {
  constructor(readonly o: WidgetDeskOptions) {}

  static isWidgetPath(rest: string): boolean {
    return rest.startsWith(WIDGET_DIR)
  }

  handle(
    req: IncomingMessage,
    res: ServerResponse,
    heads: RequestHeads,
    route: CompiledRoute,
    rest: string,
    claims: SessionClaims,
  ): void {
    const q = rest.indexOf('?')
    const name = (q < 0 ? rest : rest.slice(0, q)).slice(WIDGET_DIR.length)
    const method = req.method ?? 'GET'
    const e = route.entry
    if (name === 'widget.js' && (method === 'GET' || method === 'HEAD')) return this.#script(req, res)
    if (name === 'status' && (method === 'GET' || method === 'HEAD'))
      return void this.#reply(res, e, claims.userId, this.o.controls.status(e.instanceId))
    if (!ACTIONS.has(name)) return sendJsonError(res, 404, 'NOT_FOUND', 'no such widget resource')
    req.resume()
    if (method !== 'POST') {
      res.setHeader('allow', 'POST')
      return sendJsonError(res, 400, 'INVALID_REQUEST', `${name} takes POST`)
    }
    if (!this.o.access.fromOwnPage(req, heads) || !this.#tokenOk(req, e.instanceId, e.generation, claims.userId)) {
      this.o.log.info(
        { instanceId: e.instanceId, origin: heads.origin, action: name },
        'widget action refused (origin or token)',
      )
      return sendJsonError(res, 403, 'FORBIDDEN', 'this action must come from the session page with its widget token')
    }
    const c = this.o.controls
    if (name === 'keep') return void this.#reply(res, e, claims.userId, c.keepWorking(e.instanceId, claims.userId))
    const done = name === 'stop' ? c.stop(e.instanceId, claims.userId) : c.suspend(e.instanceId, claims.userId)
    void this.#reply(
      res,
      e,
      claims.userId,
      done.then(() => ({ status: 'OK' })),
    )
  }

  /** The banner's rewrite for a forwarded request, or undefined (not opted in, not a page load). */
  rewriteFor(req: IncomingMessage, ctx: ForwardContext): WidgetRewrite | undefined {
    const e = ctx.route.entry
    if (!e.injectWidget) return undefined
    const method = req.method ?? 'GET'
    if (method !== 'GET' && method !== 'HEAD') return undefined
    // Top-level documents only: a fetch, an iframe or a script load says so (Fetch Metadata); older clients send nothing.
    const dest = req.headers['sec-fetch-dest']
    if (typeof dest === 'string' && dest !== 'document') return undefined
    let suffixed = false
    const f = ctx.heads.forward
    for (let i = 0; i < f.length; i += 2)
      if (f[i]!.toLowerCase() === 'if-none-match') {
        const u = unsuffixIfNoneMatch(f[i + 1]!)
        f[i + 1] = u.value
        suffixed ||= u.changed
      }
    return new WidgetRewrite({
      basePath: ctx.prefix + WIDGET_DIR,
      origin: `${ctx.proto}://${ctx.host}`,
      nonce: this.#mac(e.instanceId, e.generation, 'nonce').slice(0, 24),
      suffixedValidator: suffixed,
      head: method === 'HEAD',
    })
  }

  #script(req: IncomingMessage, res: ServerResponse): void {
    const headers = {
      'content-type': 'text/javascript; charset=utf-8',
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
      etag: SCRIPT_ETAG,
    }
    if (req.headers['if-none-match'] === SCRIPT_ETAG) {
      res.writeHead(304, headers)
      return void res.end()
    }
    res.writeHead(200, { ...headers, 'content-length': Buffer.byteLength(WIDGET_SCRIPT) })
    res.end(req.method === 'HEAD' ? undefined : WIDGET_SCRIPT)
  }

  async #reply(res: ServerResponse, e: RouteEntry, userId: string, p: Promise<object | undefined>): Promise<void> {
    try {
      const body = await p
      if (body === undefined) return sendJsonError(res, 404, 'NOT_FOUND', 'this session has ended')
      // A status carries the poll interval and the token the banner's POSTs must send.
      const extra =
        'pendingStop' in body
          ? { pollMs: this.o.pollMs, token: this.#mac(e.instanceId, e.generation, `token\0${userId}`) }
          : {}
      sendJson(res, 200, { ...body, ...extra })
    } catch (err) {
      if (err instanceof AppError) return sendJsonError(res, err.statusCode, err.code, err.message)
      this.o.log.error({ err: errSummary(err), instanceId: e.instanceId }, 'widget request failed')
      sendJsonError(res, 500, 'INTERNAL', 'the widget request failed')
    }
  }

  #tokenOk(req: IncomingMessage, id: string, generation: number, userId: string): boolean {
    const got = req.headers['x-studiopool-token']
    if (typeof got !== 'string') return false
    const want = Buffer.from(this.#mac(id, generation, `token\0${userId}`))
    const have = Buffer.from(got)
    return have.length === want.length && timingSafeEqual(have, want)
  }

  #mac(id: string, generation: number, purpose: string): string {
    return createHmac('sha256', this.o.tokens.appToken(id, generation))
      .update(`studiopool/widget/v1\0${purpose}`)
      .digest('base64url')
  }
}

function sendJson(res: ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  })
  res.end(text)
}
