import { deriveAppToken } from './domain/app-token.js'
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import pino, { type Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import { instanceCallbackBase, withPublicUrl } from './config/load.js'
import type { Config } from './config/types.js'
import { Keyring } from './api/keyring.js'
import type { ApiDeps } from './api/context.js'
import { buildServer } from './api/server.js'
import type { Links } from './api/views.js'
import { createGateway, type Gateway } from './gateway/gateway.js'
import { RouteHub } from './gateway/route-hub.js'
import { createTokenService, launchUrl, sessionUrl, type TokenService } from './gateway/tokens.js'
import type { ActivitySink, NonceLedger } from './domain/routes.js'
import { createMetrics, type Metrics } from './metrics.js'
import { PoolService, type FaultHooks } from './pool/pool-service.js'
import { StoreRouteSync } from './pool/store-route-sync.js'
import { Worker } from './pool/worker.js'
import type { Provider } from './providers/provider.js'
import type { decideLogin } from './web/login-policy.js'
import { checkReadiness } from './api/readiness.js'
import { createProbeHandler } from './probes.js'
import { armBodyTimeout } from './server-lifecycle.js'
import { buildProviders, Cleanups, decideDashboardLogin, openStore } from './start-steps.js'
import { addressUrl, Listener } from './listener.js'
import type { Store } from './store/store.js'

export type Role = 'all' | 'api' | 'gateway' | 'worker'

export interface StartOptions {
  readonly config: Config
  readonly role?: Role
  readonly log?: Logger
  readonly faults?: FaultHooks
  /** Called once with a freshly created admin key (first start only). */
  readonly onBootstrapKey?: (key: string, url: string) => void
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
  close(): Promise<void>
  /**
   * SIGTERM (issue 9 item 9): /readyz 503, no new connections, close frames 1001 to proxied
   * WebSockets and our SSE streams ended, in-flight requests finish within `graceMs`; then close().
   */
  shutdown(graceMs: number): Promise<void>
}

/** Pino with secrets redacted wherever they might appear. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers.cookie',
        'req.headers["x-api-key"]',
        'key',
        'secret',
        'token',
        '*.key',
        '*.secret',
        '*.token',
      ],
      censor: '[redacted]',
    },
  })
}

/**
 * The composition root: config → store → providers → pool → api + gateway on one listener
 * (or one role, architecture.md "One package, one binary, several roles"). Each step is a function below.
 */
export async function start(opts: StartOptions): Promise<Running> {
  const role = opts.role ?? 'all'
  const log = opts.log ?? createLogger(opts.config.server.logLevel)
  const metrics = createMetrics()
  if (role === 'gateway') return startGatewayRole(opts.config, log, metrics)

  warnIfAuthOff(opts.config, log)
  const store = await openStore(opts.config, log)
  const cleanups = new Cleanups(log)
  cleanups.push(() => store.close())
  try {
    const { providers, unavailable } = await buildProviders(opts.config, log, cleanups)
    const login = decideDashboardLogin(opts.config, providers, log)
    const secret =
      opts.config.gateway.secret ??
      (await store.setMetaIfAbsent('gateway.secret', randomBytes(32).toString('base64url')))
    const tokens = createTokenService(secret, {
      launchTtlMs: opts.config.gateway.launchTokenTtlMs,
      cookieTtlMs: opts.config.gateway.cookieTtlMs,
    })
    const listener = new Listener(role)
    const { address, config } = await listen(listener, opts.config, cleanups)
    const hub = new RouteHub()
    const pool = await buildPool({ config, store, providers, hub, log, metrics, opts, unavailable, secret }, cleanups)
    const worker = buildWorkerOrRouteSync({ config, role, store, pool, providers, hub, log, metrics }, cleanups)
    if (role === 'worker') listener.workerProbes = workerProbes({ config, store, pool, worker, listener, metrics })

    let app: FastifyInstance | null = null
    if (role !== 'worker') {
      const keyring = new Keyring(store, config.auth.keys)
      const api = { config, store, pool, providers, hub, log, metrics, tokens, login, listener, worker, opts, keyring }
      app = await startApi(api, cleanups)
      listener.gateway = startGateway(api)
      await bootstrapAdminKey(config, keyring, opts)
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
    close: g.close,
    shutdown: g.shutdown,
  }
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
    if (u.port === '0') return { address, config: withPublicUrl(config, `http://${host}:${address.port}`) }
  }
  return { address, config }
}

interface PoolParts {
  readonly config: Config
  readonly store: Store
  readonly providers: Map<string, Provider>
  readonly hub: RouteHub
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
    routes: p.hub,
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

interface WorkerParts {
  readonly config: Config
  readonly role: Role
  readonly store: Store
  readonly pool: PoolService
  readonly providers: Map<string, Provider>
  readonly hub: RouteHub
  readonly log: Logger
  readonly metrics: Metrics
}

/** The worker (roles all and worker, unless disabled); API-only replicas learn of the worker's changes by reading the store. */
function buildWorkerOrRouteSync(p: WorkerParts, cleanups: Cleanups): Worker | null {
  if (p.role === 'all' || p.role === 'worker') {
    if (!p.config.worker.enabled) return null
    const { config, store, pool, providers, metrics } = p
    // Started by `start` once the API and the gateway are up: its first cycle's top-ups (a large
    // minFree) must not compete with the API's plugins loading.
    const worker = new Worker({ config, store, pool, providers, log: p.log.child({ component: 'worker' }), metrics })
    cleanups.push(() => worker.stop())
    return worker
  }
  const sync = new StoreRouteSync(p.store, p.pool, p.hub, p.log)
  sync.start()
  cleanups.push(async () => sync.stop())
  return null
}

/** The worker role's /healthz, /readyz and /metrics (metrics for admin and proxy keys). */
function workerProbes(p: {
  config: Config
  store: Store
  pool: PoolService
  worker: Worker | null
  listener: Listener
  metrics: Metrics
}): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { config, store, pool, worker } = p
  const keys = new Keyring(store, config.auth.keys)
  return createProbeHandler({
    readiness: () =>
      checkReadiness({
        store,
        templates: config.templates.map((t) => ({ name: t.name, unavailable: pool.unavailableReason(t.name) })),
        draining: () => p.listener.lifecycle.draining(),
        extra: { worker: () => (worker ? undefined : 'worker.enabled is false') },
      }),
    metrics: p.metrics.registry,
    mayReadMetrics: async (key) => {
      if (config.auth.mode === 'none') return true
      if (key === undefined) return false
      const principal = await keys.authenticate({ authorization: `Bearer ${key}` }).catch(() => undefined)
      return principal?.kind === 'key' && principal.role !== 'requester'
    },
  })
}

interface ApiParts extends Omit<WorkerParts, 'role'> {
  readonly tokens: TokenService
  readonly login: ReturnType<typeof decideLogin>
  readonly listener: Listener
  readonly worker: Worker | null
  readonly opts: StartOptions
  readonly keyring: Keyring
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
      shuttingDown: lifecycle.shuttingDown,
    },
    draining: () => lifecycle.draining(),
    shuttingDown: lifecycle.shuttingDown,
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
  })
}

/** First start with keys auth: create an admin key and show it once (never through the logger). */
async function bootstrapAdminKey(config: Config, keyring: Keyring, opts: StartOptions): Promise<void> {
  if (config.auth.mode !== 'keys' || !config.auth.bootstrapAdmin) return
  if (await keyring.hasAdmin()) return
  const created = await keyring.create('admin', 'admin')
  opts.onBootstrapKey?.(created.secret, config.server.publicUrl)
  if (!opts.onBootstrapKey)
    process.stdout.write(`studiopool: created the first admin key (shown once): ${created.secret}\n`)
}
