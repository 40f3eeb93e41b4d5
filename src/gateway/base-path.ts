import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'

/**
 * Sub-path hosting (`server.publicUrl: https://portal.example.org/studiopool/`): requests arrive with
 * `server.basePath` (the reverse proxy passes the path through, like JupyterHub's `base_url`); it is
 * stripped from `req.url` here, once, so that the gateway and Fastify route as without a prefix, and
 * the parts that write URLs (links, Location, cookie Path, session prefixes) add it back.
 */

/** Answered at the root as well as under the prefix: load balancers and kubelets probe the listener directly. */
const ROOT_PROBES = new Set(['/healthz', '/readyz', '/metrics'])

/** 'in': go on (`req.url` now without the prefix); 'slash': the prefix without its slash; 'outside': 404. */
export type BasePathVerdict = 'in' | 'slash' | 'outside'

/** Strips `basePath` from `req.url`. Session hosts (subdomain mode) and the probes at the root are 'in' unchanged. */
export function stripBasePath(
  req: IncomingMessage,
  basePath: string,
  isSessionHost: (host: string | undefined) => boolean,
): BasePathVerdict {
  const url = req.url ?? '/'
  if (basePath === '') return 'in'
  // A session's own host (subdomain mode) serves the app at its root: its paths are the app's, untouched.
  if (isSessionHost(req.headers.host)) return 'in'
  if (url.startsWith(basePath)) {
    const c = url.charCodeAt(basePath.length)
    if (c === 47 /* / */) {
      req.url = url.slice(basePath.length)
      return 'in'
    }
    if (Number.isNaN(c) || c === 63 /* ? */) return 'slash'
  }
  const q = url.indexOf('?')
  return ROOT_PROBES.has(q >= 0 ? url.slice(0, q) : url) ? 'in' : 'outside'
}

/** Answers a request that was not 'in': a 308 to the prefix with its slash, or a 404 naming the prefix. */
export function answerOutside(req: IncomingMessage, res: ServerResponse, basePath: string, v: BasePathVerdict): void {
  if (v === 'slash') {
    res.writeHead(308, {
      location: basePath + '/' + (req.url ?? '').slice(basePath.length),
      'cache-control': 'no-store',
    })
    res.end()
    return
  }
  res.writeHead(404, { 'content-type': 'application/json' })
  res.end(
    JSON.stringify({
      error: { code: 'NOT_FOUND', message: `this server is served under ${basePath}/ (server.publicUrl)` },
    }),
  )
}

/** The same for a WebSocket upgrade: a bare 404. */
export function refuseUpgrade(socket: Duplex): void {
  socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
}
