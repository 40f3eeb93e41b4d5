import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { createServer } from 'node:http'
import { Registry } from 'prom-client'
import { checkReadiness } from '../api/readiness.js'
import { createProbeHandler, matchesAny } from '../probes.js'
import { ServerLifecycle } from '../server-lifecycle.js'
import type { Config } from '../config/types.js'
import { createGateway } from './gateway.js'
import { createRemoteActivitySink, createRemoteNonceLedger, createRemoteRouteSource } from './remote.js'
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
  const gw = createGateway({
    config: config.gateway,
    publicUrl: config.server.publicUrl,
    routes,
    activity: createRemoteActivitySink(remote),
    nonces: createRemoteNonceLedger(remote),
    tokens: createTokenService(secret, {
      launchTtlMs: config.gateway.launchTokenTtlMs,
      cookieTtlMs: config.gateway.cookieTtlMs,
    }),
    log: log.child({ component: 'gateway' }),
    metrics,
    trustProxy: config.server.trustProxy,
    probes,
  })
  // Its own listener (not gw.listen) so that shutdown can track requests and WebSockets.
  const server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000 })
  lifecycle.attach(server)
  server.on('request', gw.handleRequest)
  server.on('upgrade', gw.handleUpgrade)
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
