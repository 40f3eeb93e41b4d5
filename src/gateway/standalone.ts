import { answerOutside, refuseUpgrade, stripBasePath } from './base-path.js'
import { createRemoteSessionControls } from './remote-controls.js'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { RequestLog } from '../request-log.js'
import { Registry } from 'prom-client'
import { checkReadiness } from '../api/readiness.js'
import { createProbeHandler, matchesAny } from '../probes.js'
import { ServerLifecycle } from '../server-lifecycle.js'
import type { Config } from '../config/types.js'
import { createGateway } from './gateway.js'
import { createRemoteSharedGate } from './remote-gate.js'
import { sharedTemplateRoutes } from './shared-templates.js'
import {
  createRemoteActivitySink,
  createRemoteNonceLedger,
  createRemoteRouteSource,
  createRemoteSharedLoadSink,
} from './remote.js'
import { createTokenService } from './tokens.js'

/**
 * `studiopool serve --role gateway`: the gateway alone, fed by the API at `split.serviceUrl`
 * with the proxy key (the seed's proxy talked to the pool service the same way). It listens
 * even when the API is not reachable yet, and shows the ended page for unknown sessions
 * until the first route table arrives.
 */
// eslint-disable-next-line max-lines-per-function -- the split-mode start-up read top to bottom: config, route feed, gateway, probes, shutdown
export async function runGatewayRole(opts: {
  config: Config
  log: Logger
  metrics?: Registry
}): Promise<{ address: AddressInfo; close(): Promise<void>; shutdown(graceMs: number): Promise<void> }> {
  const { config, log } = opts
  const serviceUrl = config.split.serviceUrl
  const key = config.split.proxyKey
  if (!serviceUrl || !key)
    throw new Error('the gateway role needs split.serviceUrl (SERVICE_URL) and split.proxyKey (PROXY_KEY)')
  // In one process the secret may be generated and kept in the store; a separate gateway cannot read the store.
  if (!config.gateway.secret)
    throw new Error('the gateway role needs gateway.secret (STUDIOPOOL_SECRET), the same value the API uses')
  const secret = config.gateway.secret
  const remote = { serviceUrl, key, log: log.child({ component: 'gateway-remote' }) }
  const routes = createRemoteRouteSource(remote)
  const lifecycle = new ServerLifecycle()
  let haveTable = false
  let closed = false
  const waitTable = (): void =>
    void routes.ready(10_000).then(
      () => void (haveTable = true),
      () => (closed ? undefined : waitTable()),
    )
  waitTable()
  const metrics = opts.metrics ?? new Registry()
  // The role's own probes (issue 9 item 10): ready once it has a route table (it keeps it while the API is away) and until SIGTERM.
  const probes = createProbeHandler({
    readiness: () =>
      checkReadiness({
        draining: () => lifecycle.draining(),
        extra: { routes: () => (haveTable ? undefined : `no route table from ${serviceUrl} yet`) },
      }),
    metrics,
    mayReadMetrics: matchesAny([key, ...config.auth.keys.filter((k) => k.role !== 'requester').map((k) => k.key)]),
  })
  const sharedGate = createRemoteSharedGate({ ...remote, config })
  const gw = createGateway({
    config: config.gateway,
    publicUrl: config.server.publicUrl,
    basePath: config.server.basePath,
    routes,
    activity: createRemoteActivitySink(remote),
    nonces: createRemoteNonceLedger(remote),
    tokens: createTokenService(secret, {
      launchTtlMs: config.gateway.launchTokenTtlMs,
      cookieTtlMs: config.gateway.cookieTtlMs,
    }),
    log: log.child({ component: 'gateway' }),
    metrics,
    // Shared apps are routed here too; their load goes to the API's pool (docs/shared-pools.md "Split mode").
    shared: sharedTemplateRoutes(config),
    sharedLoad: createRemoteSharedLoadSink(remote),
    // Their schedules decided here, their hard budgets as the API last said (remote-gate.ts).
    sharedGate,
    trustProxy: config.server.trustProxy,
    probes,
    controls: createRemoteSessionControls(remote),
    widget: config.widget,
  })
  // Its own listener (not gw.listen) so that shutdown can track requests and WebSockets.
  const server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000 })
  lifecycle.attach(server)
  const access = new RequestLog(log, config.server.accessLog)
  const base = config.server.basePath
  const sessionHost = (host: string | undefined) => gw.isSessionHost(host)
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    access.request(req, res)
    const v = stripBasePath(req, base, sessionHost)
    if (v === 'in') gw.handleRequest(req, res)
    else answerOutside(req, res, base, v)
  })
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    access.upgrade(req, socket)
    if (stripBasePath(req, base, sessionHost) === 'in') gw.handleUpgrade(req, socket, head)
    else refuseUpgrade(socket)
  })
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n')
    else socket.destroy()
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(config.server.port, config.server.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  log.info({ address: `${address.address}:${address.port}`, serviceUrl }, 'gateway listening (split mode)')
  routes.ready(10_000).catch((err: Error) => log.warn({ err: err.message }, 'no route table yet; still trying'))
  const close = async () => {
    closed = true
    routes.close()
    sharedGate.close()
    await gw.close()
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  return {
    address,
    close,
    async shutdown(graceMs) {
      await lifecycle.drain([server], graceMs, () => gw.goAway())
      await close()
    },
  }
}
