import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { Agent as UndiciAgent } from 'undici'
import type { Dispatcher } from 'undici'
import { buildRequestHeaders } from './headers.js'
import type { ForwardContext } from './headers.js'
import { Exchange } from './http-exchange.js'
import type { Closeable, ForwardHooks, HttpExchange } from './http-exchange.js'
import { WsTunnel } from './ws-tunnel.js'
import type { WsHooks } from './ws-tunnel.js'

export { buildRequestHeaders, buildResponseHeaders, scanRequestHeaders } from './headers.js'
export type { ForwardContext, RequestHeads } from './headers.js'
export type { Closeable, ForwardHooks, HttpExchange } from './http-exchange.js'
export type { WsHooks } from './ws-tunnel.js'
export { WsFrameBoundary, WsFrameScanner, wsCloseFrame } from './ws-frames.js'
export { writeRawStatus } from './proxy-errors.js'

/**
 * Streaming HTTP and WebSocket forwarding. Bodies are streamed both ways, never buffered.
 *
 * HTTP goes upstream through undici's dispatcher with the raw handler interface (`Exchange`,
 * http-exchange.ts): one keep-alive pool per app, no request/response objects or streams per
 * exchange. In the same benchmark run it cost 44 µs of gateway CPU per small request against
 * 64 µs for node:http with a keep-alive Agent and `pipe` (bench/gateway.ts, BENCH_AB).
 * WebSocket upgrades use node:http (`'upgrade'` hands over the socket), then the two sockets are
 * joined directly (`WsTunnel`, ws-tunnel.ts). Header fields: headers.ts.
 */

export interface Forwarder {
  http(req: IncomingMessage, res: ServerResponse, ctx: ForwardContext, hooks: ForwardHooks): HttpExchange
  ws(req: IncomingMessage, socket: Duplex, head: Buffer, ctx: ForwardContext, hooks: WsHooks): Closeable
  close(): void
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

  return {
    http: forwardHttp,
    ws: (_req, socket, head, ctx, hooks) => new WsTunnel(socket, head, ctx, hooks, timeout),
    close() {
      void pool.destroy()
    },
  }
}
