import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import type { Logger } from 'pino'
import { Registry } from 'prom-client'
import { WebSocketServer } from 'ws'
import type { Config } from '../../src/config/types.js'
import { newInstanceId } from '../../src/domain/ids.js'
import type { RouteEntry } from '../../src/domain/routes.js'
import { createGateway } from '../../src/gateway/gateway.js'
import type { Gateway, GatewayOptions } from '../../src/gateway/gateway.js'
import { createMemoryNonceLedger } from '../../src/gateway/memory-nonce-ledger.js'
import { RouteHub } from '../../src/gateway/route-hub.js'
import { createTokenService } from '../../src/gateway/tokens.js'
import type { TokenService } from '../../src/gateway/tokens.js'

export const SECRET = 'test-secret-0123456789abcdef'

export interface Upstream {
  readonly url: string
  readonly port: number
  readonly big: Buffer
  readonly bigSha: string
  /** Requests the app saw: method, url, headers. */
  readonly seen: { method: string; url: string; headers: http.IncomingHttpHeaders }[]
  readonly wss: WebSocketServer
  /** `/hang` requests: opened, and closed by the other side (the gateway gave up on them). */
  readonly hang: { opened: number; closed: number }
  close(): Promise<void>
}

/** A small app: echo, streamed upload/download with checksums, chunked, SSE, redirects, cookies, WebSocket echo/push. */
export async function startUpstream(): Promise<Upstream> {
  const big = randomBytes(20 * 1024 * 1024)
  const bigSha = createHash('sha256').update(big).digest('hex')
  const seen: Upstream['seen'] = []
  const hang = { opened: 0, closed: 0 }
  let selfUrl = ''
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers })
    const u = new URL(req.url!, 'http://x')
    const p = u.pathname.replace(/^\/s\/[a-z2-7]{20}/, '') // keep-mode apps see the prefix
    if (p === '/upload') {
      const h = createHash('sha256')
      let n = 0
      req.on('data', (c: Buffer) => {
        h.update(c)
        n += c.length
      })
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ sha: h.digest('hex'), bytes: n }))
      })
      return
    }
    if (p === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }) // no length: chunked
      let off = 0
      const step = () => {
        while (off < big.length) {
          const chunk = big.subarray(off, off + 256 * 1024)
          off += chunk.length
          if (!res.write(chunk)) return void res.once('drain', step)
        }
        res.end()
      }
      step()
      return
    }
    if (p === '/chunked') {
      res.writeHead(200, { 'content-type': 'text/plain' })
      let i = 0
      const t = setInterval(() => {
        res.write(`part${i};`)
        if (++i === 5) {
          clearInterval(t)
          res.end()
        }
      }, 20)
      return
    }
    if (p === '/sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      let i = 0
      const t = setInterval(() => {
        res.write(`data: tick ${i}\n\n`)
        if (++i === 3) {
          clearInterval(t)
          res.end()
        }
      }, 30)
      req.on('close', () => clearInterval(t))
      return
    }
    if (p === '/redirect-path') {
      res.writeHead(302, { location: '/target?x=1' })
      return res.end()
    }
    if (p === '/redirect-upstream') {
      res.writeHead(302, { location: `${selfUrl}/target` })
      return res.end()
    }
    if (p === '/redirect-relative') {
      res.writeHead(302, { location: 'target' })
      return res.end()
    }
    if (p === '/cookies') {
      res.writeHead(200, {
        'set-cookie': ['a=1; Path=/', 'b=2; Path=/sub; HttpOnly', 'c=3', 'sp_session=evil; Path=/'],
      })
      return res.end('ok')
    }
    if (p === '/hang') {
      hang.opened++
      res.on('close', () => hang.closed++)
      return
    }
    if (p === '/slow-then-fail') {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('partial')
      setTimeout(() => res.destroy(), 50)
      return
    }
    res.writeHead(200, {
      'content-type': 'application/json',
      connection: 'keep-alive, x-hop',
      'x-hop': 'drop-me',
      'keep-alive': 'timeout=5',
    })
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }))
  })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => {
    ws.send(JSON.stringify({ hello: req.url, cookie: req.headers.cookie ?? null }))
    ws.on('message', (data, isBinary) => {
      const s = data.toString()
      if (s === 'push') {
        let i = 0
        const t = setInterval(() => {
          if (ws.readyState !== ws.OPEN || i++ >= 10) return clearInterval(t)
          ws.send('pushed ' + i)
          ws.ping()
        }, 20)
        return
      }
      ws.send(data, { binary: isBinary })
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  selfUrl = `http://127.0.0.1:${port}`
  return {
    url: selfUrl,
    port,
    big,
    bigSha,
    seen,
    wss,
    hang,
    async close() {
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

export function gatewayConfig(over: Partial<Config['gateway']> = {}): Config['gateway'] {
  return {
    mode: 'path',
    sessionDomain: null,
    secret: SECRET,
    launchTokenTtlMs: 120_000,
    cookieTtlMs: 12 * 3600_000,
    cookieName: 'sp_session',
    adminAccess: true,
    defaultUrl: null,
    activityFlushMs: 60_000,
    upstreamTimeoutMs: 120_000,
    allowedOrigins: [],
    routeToReplace: null,
    stringToReplace: null,
    ...over,
  }
}

export function route(over: Partial<RouteEntry> & { address: string | null }): RouteEntry {
  return {
    instanceId: newInstanceId(),
    ownerId: 'alice',
    template: 'demo',
    state: 'ready',
    pathMode: 'strip',
    hostHeader: 'target',
    progress: 100,
    progressMessage: '',
    queuePosition: null,
    generation: 1,
    failureReason: null,
    ...over,
  }
}

/** Log lines as text, for asserting that secrets never show up. */
export function captureLogs(): { logger: Logger; text(): string } {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString())
      cb()
    },
  })
  return { logger: pino({ level: 'trace' }, stream) as unknown as Logger, text: () => lines.join('') }
}

export interface TestGateway {
  readonly gw: Gateway
  readonly hub: RouteHub
  readonly tokens: TokenService
  readonly base: string
  readonly port: number
  readonly activity: { id: string; at: number }[][]
  readonly logs: () => string
  readonly registry: Registry
  cookie(userId: string, admin?: boolean): string
  close(): Promise<void>
}

export async function startGateway(
  over: Partial<Config['gateway']> = {},
  publicUrl?: (port: number) => string,
  extra: Pick<GatewayOptions, 'controls' | 'widget'> = {},
): Promise<TestGateway> {
  const hub = new RouteHub()
  const config = gatewayConfig(over)
  const tokens = createTokenService(SECRET, { launchTtlMs: config.launchTokenTtlMs, cookieTtlMs: config.cookieTtlMs })
  const activity: { id: string; at: number }[][] = []
  const logs = captureLogs()
  const registry = new Registry()
  // publicUrl must name the port, which is only known after listen: listen on a server we own first.
  const probe = http.createServer()
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r))
  const port = (probe.address() as AddressInfo).port
  await new Promise<void>((r) => probe.close(() => r()))
  const pub = publicUrl ? publicUrl(port) : `http://127.0.0.1:${port}`
  const gw = createGateway({
    config,
    publicUrl: pub,
    routes: hub,
    activity: { recordActivity: async (e) => void activity.push([...e]) },
    nonces: createMemoryNonceLedger(),
    tokens,
    log: logs.logger,
    metrics: registry,
    ...extra,
  })
  await gw.listen(port, '127.0.0.1')
  return {
    gw,
    hub,
    tokens,
    base: `http://127.0.0.1:${port}`,
    port,
    activity,
    logs: logs.text,
    registry,
    cookie: (userId, admin = false) => `${config.cookieName}=${tokens.issueSession({ userId, admin, groups: [] })}`,
    close: () => gw.close(),
  }
}
