import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
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
export async function runGatewayRole(opts: { config: Config; log: Logger; metrics?: Registry }): Promise<{ address: AddressInfo; close(): Promise<void> }> {
  const { config, log } = opts
  const serviceUrl = config.split.serviceUrl
  const key = config.split.proxyKey
  if (!serviceUrl || !key) throw new Error('the gateway role needs split.serviceUrl (SERVICE_URL) and split.proxyKey (PROXY_KEY)')
  // In one process the secret may be generated and kept in the store; a separate gateway cannot read the store.
  if (!config.gateway.secret) throw new Error('the gateway role needs gateway.secret (STUDIOPOOL_SECRET), the same value the API uses')
  const secret = config.gateway.secret
  const remote = { serviceUrl, key, log: log.child({ component: 'gateway-remote' }) }
  const routes = createRemoteRouteSource(remote)
  const gw = createGateway({
    config: config.gateway,
    publicUrl: config.server.publicUrl,
    routes,
    activity: createRemoteActivitySink(remote),
    nonces: createRemoteNonceLedger(remote),
    tokens: createTokenService(secret, { launchTtlMs: config.gateway.launchTokenTtlMs, cookieTtlMs: config.gateway.cookieTtlMs }),
    log: log.child({ component: 'gateway' }),
    metrics: opts.metrics,
    trustProxy: config.server.trustProxy,
  })
  const address = await gw.listen(config.server.port, config.server.host)
  log.info({ address: `${address.address}:${address.port}`, serviceUrl }, 'gateway listening (split mode)')
  routes.ready(10_000).catch((err: Error) => log.warn({ err: err.message }, 'no route table yet; still trying'))
  return {
    address,
    async close() {
      routes.close()
      await gw.close()
    },
  }
}
