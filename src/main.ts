import { deriveAppToken } from './domain/app-token.js'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import { instanceCallbackBase, withPublicUrl } from './config/load.js'
import type { Config } from './config/types.js'
import { Keyring } from './api/keyring.js'
import type { ApiDeps } from './api/context.js'
import { buildServer } from './api/server.js'
import type { Links } from './api/views.js'
import { createGateway, type Gateway } from './gateway/gateway.js'
import { sharedTemplateRoutes } from './gateway/shared-templates.js'
import { RouteHub } from './gateway/route-hub.js'
import { startWebhooks, type EventSink } from './pool/webhooks.js'
import { createTokenService, launchUrl, sessionUrl, type TokenService } from './gateway/tokens.js'
import type { ActivitySink, NonceLedger } from './domain/routes.js'
import { createMetrics, type Metrics } from './metrics.js'
import { packageVersion } from './version.js'
import { PoolService, type FaultHooks } from './pool/pool-service.js'
import { createSessionControls } from './pool/session-controls.js'
import type { Worker } from './pool/worker.js'
import { VerifiedRoutes } from './pool/store-route-sync.js'
import { buildWorkerAndRouteSync, replicaStatus, workerProbes, type WorkerParts } from './replica-steps.js'
import type { Provider } from './providers/provider.js'
import type { decideLogin } from './web/login-policy.js'
import { armBodyTimeout } from './server-lifecycle.js'
import { createLogger } from './logging.js'
import { buildProviders, Cleanups, decideDashboardLogin, openStore, refuseUnavailable } from './start-steps.js'
import { addressUrl, Listener } from './listener.js'
import { RequestLog } from './request-log.js'
import type { Store } from './store/store.js'

export type Role = 'all' | 'api' | 'gateway' | 'worker'

export interface StartOptions {
  readonly config: Config
  readonly role?: Role
  readonly log?: Logger
  readonly faults?: FaultHooks
  /**
   * Called once when the first admin key was created (first start only), with the key (for an
   * embedder in the same process), the public URL and the 0600 file in the data directory that holds
   * it (`bootstrap-admin.key`). The server never prints the key.
   */
  readonly onBootstrapKey?: (key: string, url: string, keyFile: string) => void
  /**
   * Refuse to start (ConfigError, exit 2) when a template cannot serve because of its configuration;
   * the CLI sets it unless `--degraded`. Off by default for embedders and tests, which serve degraded.
   */
  readonly refuseUnavailable?: boolean
  /** Configuration warnings to log at start (loadConfigDetailed's precedence conflicts). */
  readonly configWarnings?: readonly string[]
  /** Extra Fastify plugins (the dashboard registers itself here). */
  readonly plugins?: ApiDeps['plugins']
}

export interface Running {
  readonly config: Config
  readonly url: string
  readonly address: AddressInfo | null
  readonly store: Store | null
  readonly pool: PoolService | null
  readonly worker: Worker | null
  readonly app: FastifyInstance | null
  readonly gateway: Gateway | null
  readonly tokens: TokenService | null
  readonly metrics: Metrics
  /** Events for webhooks: `events.emit({type: "budget.warning", data})` (docs/webhooks.md). Null in the gateway role. */
  readonly events: EventSink | null
  close(): Promise<void>
  /**
   * SIGTERM (issue 9 item 9): /readyz 503, no new connections, close frames 1001 to proxied
   * WebSockets and our SSE streams ended, in-flight requests finish within `graceMs`; then close().
   */
  shutdown(graceMs: number): Promise<void>
}

export { createLogger } from './logging.js'

/** The first admin key's file in the data directory (0600). */
export const BOOTSTRAP_KEY_FILE = 'bootstrap-admin.key'

/**
 * The composition root: config → store → providers → pool → api + gateway on one listener
 * (or one role, architecture.md "One package, one binary, several roles"). Each step is a function below.
 */
export async function start(opts: StartOptions): Promise<Running> {
  const role = opts.role ?? 'all'
  const log = opts.log ?? createLogger(opts.config.server.logLevel)
  const metrics = createMetrics({ version: packageVersion() })
  for (const w of opts.configWarnings ?? []) log.warn(`configuration: ${w}`)
  if (role === 'gateway') return startGatewayRole(opts.config, log, metrics)

  warnIfAuthOff(opts.config, log)
  const store = await openStore(opts.config, log)
  const cleanups = new Cleanups(log)
  cleanups.push(() => store.close())
  try {
    const { providers, unavailable } = await buildProviders(opts.config, log, cleanups)
    if (opts.refuseUnavailable) refuseUnavailable(unavailable)
    const login = decideDashboardLogin(opts.config, providers, log)
    const secret =
      opts.config.gateway.secret ??
      (await store.setMetaIfAbsent('gateway.secret', randomBytes(32).toString('base64url')))
    const tokens = createTokenService(secret, {
      launchTtlMs: opts.config.gateway.launchTokenTtlMs,
      cookieTtlMs: opts.config.gateway.cookieTtlMs,
    })
    const listener = new Listener(role, opts.config.server.basePath)
    listener.requestLog = new RequestLog(log, opts.config.server.accessLog)
    const { address, config } = await listen(listener, opts.config, cleanups)
    const hub = new RouteHub()
    const poolRoutes = new VerifiedRoutes(hub)
    const pool = await buildPool(
      { config, store, providers, hub, poolRoutes, log, metrics, opts, unavailable, secret },
      cleanups,
    )
    const { worker, sync } = buildWorkerAndRouteSync(
      { config, role, store, pool, providers, hub, log, metrics, poolRoutes },
      cleanups,
    )
    const replica = replicaStatus(worker, sync)
    if (role === 'worker')
      listener.workerProbes = workerProbes({ config, store, pool, worker, listener, metrics, replica })
    const events = startEvents(config, store, pool, hub, log, cleanups)

    let app: FastifyInstance | null = null
    if (role !== 'worker') {
      const keyring = new Keyring(store, config.auth.keys)
      const api = {
        ...{ config, store, pool, providers, hub, log, metrics, tokens, login, listener, worker, opts, keyring },
        replica,
      }
      app = await startApi(api, cleanups)
      listener.gateway = startGateway(api)
      await bootstrapAdminKey(config, keyring, opts, log)
    }

    worker?.start()

    // The worker role serves only its probes, on its own port: its banner names where it listens, not the public URL.
    const url = role === 'worker' ? addressUrl(address) : config.server.publicUrl
    log.info(
      { url, role, templates: config.templates.map((t) => t.name), store: config.store.driver },
      'studiopool is running',
    )
    const shutdown = async (graceMs: number) => {
      await listener.lifecycle.drain([listener.server], graceMs, () => listener.gateway?.goAway())
      await cleanups.closeAll()
    }
    const gateway = listener.gateway ?? null
    return {
      config,
      url,
      address,
      store,
      pool,
      worker,
      app,
      gateway,
      tokens,
      metrics,
      events,
      close: cleanups.closeAll,
      shutdown,
    }
  } catch (err) {
    await cleanups.closeAll()
    throw err
  }
}

/** `--role gateway`: the standalone gateway (a client of the API, no store). */
async function startGatewayRole(config: Config, log: Logger, metrics: Metrics): Promise<Running> {
  const { runGatewayRole } = await import('./gateway/standalone.js')
  const g = await runGatewayRole({ config, log, metrics: metrics.registry })
  return {
    config,
    url: addressUrl(g.address),
    address: g.address,
    store: null,
    pool: null,
    worker: null,
    app: null,
    gateway: null,
    tokens: null,
    metrics,
    events: null,
    close: g.close,
    shutdown: g.shutdown,
  }
}

/** Webhooks and operator hooks (docs/webhooks.md, docs/hooks.md), fed by the route hub; hook outcomes go to the audit. */
/** Webhooks and operator hooks: session events from the route hub, budget events from the pool's cost. */
function startEvents(config: Config, store: Store, pool: PoolService, hub: RouteHub, log: Logger, cleanups: Cleanups) {
  const events = startWebhooks(
    {
      ...{ store, targets: config.webhooks, log, routes: hub, hooks: config.hooks, env: process.env },
      audit: (id, event, actor, detail) => pool.audit(id, event, actor, detail),
      sessionUrl: (id) => sessionUrl(config.gateway, config.server.publicUrl, id),
    },
    (s) => cleanups.push(s),
  )
  // Budget events (docs/cost.md); the id is stable per budget, key, instance and day.
  pool.cost.onBudgetEvent((e) => {
    const id = `${e.type}:${e.budget.id}:${e.key}:${e.instanceId ?? ''}:${Math.floor(e.at / 86_400_000)}`
    const { type, ...data } = e
    events.emit({ type, id, data }).catch((err: unknown) => log.warn({ err, event: id }, 'budget event not queued'))
  })
  return events
}

function warnIfAuthOff(config: Config, log: Logger): void {
  if (config.auth.mode === 'none') {
    log.warn(
      'AUTHENTICATION IS OFF (auth.mode: none): anyone who reaches this port can request, read and delete sessions',
    )
  }
}

/** Every role listens (the worker for its probes only, issue 9 item 10). With port 0, the public URL gets the bound port. */
async function listen(
  listener: Listener,
  config: Config,
  cleanups: Cleanups,
): Promise<{ address: AddressInfo; config: Config }> {
  const address = await listener.listen(config.server.port, config.server.host)
  cleanups.push(() => listener.close())
  if (address && config.server.port === 0) {
    const host = address.address.includes(':') ? `[${address.address}]` : address.address
    const u = new URL(config.server.publicUrl)
    if (u.port === '0')
      return { address, config: withPublicUrl(config, `http://${host}:${address.port}${config.server.basePath}`) }
  }
  return { address, config }
}

interface PoolParts {
  readonly config: Config
  readonly store: Store
  readonly providers: Map<string, Provider>
  readonly hub: RouteHub
  readonly poolRoutes: VerifiedRoutes
  readonly log: Logger
  readonly metrics: Metrics
  readonly opts: StartOptions
  readonly unavailable: Map<string, string>
  readonly secret: string
}

/** The pool, with its routes published to the hub. */
async function buildPool(p: PoolParts, cleanups: Cleanups): Promise<PoolService> {
  const progressBase = instanceCallbackBase(p.config).url.replace(/\/+$/, '')
  const progressUrl = (id: string) => `${progressBase}/api/v1/instances/${id}/progress`
  const pool = new PoolService({
    config: p.config,
    store: p.store,
    providers: p.providers,
    routes: p.poolRoutes,
    log: p.log.child({ component: 'pool' }),
    metrics: p.metrics,
    faults: p.opts.faults,
    unavailable: p.unavailable,
    progressUrl,
    appToken: (id, gen) => deriveAppToken(p.secret, id, gen),
  })
  cleanups.push(() => pool.close())
  await pool.publishAll()
  return pool
}

interface ApiParts extends Omit<WorkerParts, 'role'> {
  readonly tokens: TokenService
  readonly login: ReturnType<typeof decideLogin>
  readonly listener: Listener
  readonly worker: Worker | null
  readonly opts: StartOptions
  readonly keyring: Keyring
  readonly replica: ApiDeps['replica']
}

const activitySink = (store: Store): ActivitySink => ({ recordActivity: (entries) => store.recordActivity(entries) })
const nonceLedger = (store: Store): NonceLedger => ({
  consumeOnce: (nonce, expiresAt) => store.consumeNonce(nonce, expiresAt, Date.now()),
})

/** The API and the dashboard (Fastify), on the shared listener. */
async function startApi(p: ApiParts, cleanups: Cleanups): Promise<FastifyInstance> {
  const { config, store, pool, log, metrics, providers, tokens, login, listener } = p
  const { lifecycle } = listener
  const links: Links = {
    sessionUrl: (id) => sessionUrl(config.gateway, config.server.publicUrl, id),
    launchUrl: (id, userId, requester) =>
      launchUrl(config.gateway, config.server.publicUrl, id, tokens.issueLaunch({ instanceId: id, userId, requester })),
  }
  const deps: ApiDeps = {
    config,
    store,
    pool,
    keyring: p.keyring,
    links,
    log,
    metrics,
    providers,
    gatewayFeed: {
      routes: p.hub,
      activity: activitySink(store),
      nonces: nonceLedger(store),
      sharedLoad: pool,
      sharedGate: () => pool.sharedGateSnapshot(),
      shuttingDown: lifecycle.shuttingDown,
      controls: createSessionControls(pool),
    },
    draining: () => lifecycle.draining(),
    shuttingDown: lifecycle.shuttingDown,
    replica: p.replica,
    plugins: [
      async (a) => {
        const { registerDashboard } = await import('./web/dashboard.js')
        await registerDashboard(a, { ...deps, tokens, routes: p.hub, login })
      },
      ...(p.opts.plugins ?? []),
    ],
  }
  const app = await buildServer(deps, {
    serverFactory: (handler) => {
      listener.fastify = handler
      return listener.server
    },
  })
  await app.ready()
  listener.appReady = true
  // Closed first: stop the worker, close proxied connections (flushing activity), then the listener and Fastify.
  cleanups.push(async () => {
    await p.worker?.stop()
    await listener.gateway?.close()
    listener.server.closeAllConnections()
    await app.close()
  })
  return app
}

/** The gateway: sees every request first; the rest goes to Fastify with a bounded body time. */
function startGateway(p: ApiParts): Gateway {
  const { config, listener } = p
  return createGateway({
    config: config.gateway,
    publicUrl: config.server.publicUrl,
    basePath: config.server.basePath,
    routes: p.hub,
    activity: activitySink(p.store),
    nonces: nonceLedger(p.store),
    tokens: p.tokens,
    log: p.log.child({ component: 'gateway' }),
    metrics: p.metrics.registry,
    fallback: (req, res) => {
      // The API and the dashboard: bounded body time (sessions are exempt: uploads to apps may be slow).
      armBodyTimeout(req, res, config.server.bodyTimeoutMs)
      listener.fastify!(req, res)
    },
    trustProxy: config.server.trustProxy,
    controls: createSessionControls(p.pool),
    widget: config.widget,
    shared: sharedTemplateRoutes(config),
    sharedLoad: p.pool,
    sharedGate: p.pool,
  })
}

/** First start with keys auth: create an admin key and show it once (never through the logger). */
async function bootstrapAdminKey(config: Config, keyring: Keyring, opts: StartOptions, log: Logger): Promise<void> {
  if (config.auth.mode !== 'keys' || !config.auth.bootstrapAdmin) return
  if (await keyring.hasAdmin()) return
  const created = await keyring.create('admin', 'admin')
  // Never on stdout (it ends up in the journal or the pod log, issue 17): a file only the server's account reads.
  const file = join(config.server.dataDir, BOOTSTRAP_KEY_FILE)
  writeFileSync(file, `${created.secret}\n`, { mode: 0o600 })
  chmodSync(file, 0o600)
  if (opts.onBootstrapKey) opts.onBootstrapKey(created.secret, config.server.publicUrl, file)
  else log.warn({ keyFile: file }, `first admin key written to ${file} (mode 0600): read it once, then delete the file`)
}
