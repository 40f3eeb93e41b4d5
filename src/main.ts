import { deriveAppToken } from './domain/app-token.js'
import { randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import pino, { type Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import { ConfigError, instanceCallbackBase, isLoopbackUrl, withPublicUrl } from './config/load.js'
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
import { loadProvider } from './providers/registry.js'
import { decideLogin, proxyTrustWarnings, type SessionReach } from './web/login-policy.js'
import { createStore } from './store/sql-store.js'
import { checkReadiness } from './api/readiness.js'
import { createProbeHandler } from './probes.js'
import { armBodyTimeout, ServerLifecycle } from './server-lifecycle.js'
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
 * Instances on other machines post progress to the callback URL: a loopback one would reach the
 * instance itself (issue 9). Throws ConfigError (exit 2) naming the setting.
 */
function refuseLoopbackCallback(config: Config, provider: string): void {
  const callback = instanceCallbackBase(config)
  if (!isLoopbackUrl(callback.url)) return
  const names = config.templates.filter((t) => t.provider === provider).map((t) => `"${t.name}"`)
  throw new ConfigError(
    [
      {
        path: '/server/instanceCallbackUrl',
        message: `template ${names.join(', ')} runs on ${provider} instances, which cannot reach the progress URL ${callback.url} (from ${callback.setting}): it is a loopback address. Set server.instanceCallbackUrl (or STUDIOPOOL_INSTANCE_CALLBACK_URL, or SERVICE_URL) to an address the instances can reach`,
      },
    ],
    'start',
  )
}

/**
 * The composition root: config → store → providers → pool → api + gateway on one listener
 * (or one role, DESIGN.md "One package, one binary, several roles").
 */
export async function start(opts: StartOptions): Promise<Running> {
  let config = opts.config
  const role = opts.role ?? 'all'
  const log = opts.log ?? createLogger(config.server.logLevel)
  const metrics = createMetrics()

  if (role === 'gateway') {
    const { runGatewayRole } = await import('./gateway/standalone.js')
    const g = await runGatewayRole({ config, log, metrics: metrics.registry })
    const url = `http://${g.address.address.includes(':') ? `[${g.address.address}]` : g.address.address}:${g.address.port}`
    return {
      config,
      url,
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

  if (config.auth.mode === 'none') {
    log.warn(
      'AUTHENTICATION IS OFF (auth.mode: none): anyone who reaches this port can request, read and delete sessions',
    )
  }

  secureDataDir(config)
  const store = await createStore(config.store, { log, poolId: config.pool.id, dataDir: config.server.dataDir })
  secureStoreFile(config)
  const cleanups: (() => Promise<void>)[] = [() => store.close()]
  const closeAll = async () => {
    for (const c of cleanups.reverse())
      await c().catch((err) => log.warn({ err: (err as Error).message }, 'close step failed'))
    cleanups.length = 0
  }
  try {
    // Providers: only the ones templates use; a template whose program is missing is reported and refused, the others run.
    const providers = new Map<string, Provider>()
    const unavailable = new Map<string, string>()
    for (const t of config.templates) {
      let p = providers.get(t.provider)
      if (!p) {
        try {
          p = await loadProvider(t.provider, {
            poolId: config.pool.id,
            dataDir: config.server.dataDir,
            settings: config.providers[t.provider] ?? {},
            log: log.child({ provider: t.provider }),
          })
          // Checked before init (which may talk to the cloud): a configuration error, not an outage.
          if (p.capabilities.remoteInstances) refuseLoopbackCallback(config, t.provider)
          await p.init({ log })
          providers.set(t.provider, p)
          cleanups.push(() => p!.close())
        } catch (err) {
          if (err instanceof ConfigError) throw err
          unavailable.set(t.name, `provider ${t.provider}: ${(err as Error).message}`)
          continue
        }
      }
      const problems = p.validateTemplate(t)
      if (problems.length) unavailable.set(t.name, problems.join('; '))
    }
    for (const [name, why] of unavailable) log.error({ template: name }, `template "${name}" is unavailable: ${why}`)

    // Logins that sessions (or anyone behind a same-host proxy) could borrow are refused (issue 8).
    const reach: SessionReach[] = []
    for (const [name, p] of providers) {
      const r = p.isolation?.()
      if (r)
        reach.push({
          provider: name,
          sessionsReachLoopback: r.sessionsReachLoopback,
          sessionNetworks: r.sessionNetworks,
        })
    }
    const login = decideLogin(config, reach)
    if (login.refused) {
      const detail = login.refused.detail ? ` (${login.refused.detail})` : ''
      log.warn(
        { configured: login.configured },
        `DASHBOARD LOGIN IS OFF: dashboard.login is "${login.configured}", but ${login.refused.reason}${detail}. To sign users in: ${login.refused.fix}.`,
      )
    } else if (login.effective === 'dev' && reach.some((r) => r.sessionsReachLoopback)) {
      log.warn(
        'dev login is on although sessions can reach this server from loopback (dashboard.allowDevLoginFromSessions): code in any session can sign in as any user',
      )
    }
    for (const w of proxyTrustWarnings(config, reach)) log.warn(w)

    const secret =
      config.gateway.secret ?? (await store.setMetaIfAbsent('gateway.secret', randomBytes(32).toString('base64url')))
    const tokens = createTokenService(secret, {
      launchTtlMs: config.gateway.launchTokenTtlMs,
      cookieTtlMs: config.gateway.cookieTtlMs,
    })

    // One listener: the gateway sees every request first and hands the rest to Fastify.
    let fastifyHandler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
    // Fastify's handler exists from construction, but routes work only after ready(): until then, 503.
    let appReady = false
    let gateway: Gateway | undefined
    // The worker role listens for its probes only (issue 9 item 10); set once the store and pool exist.
    let workerProbes: ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined
    const lifecycle = new ServerLifecycle()
    const server: Server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 72_000 })
    lifecycle.attach(server)
    server.on('request', (req, res) => {
      if (role === 'worker') {
        if (workerProbes?.(req, res)) return
        res.writeHead(workerProbes ? 404 : 503, { 'content-type': 'application/json' })
        res.end(
          workerProbes
            ? '{"error":{"code":"NOT_FOUND","message":"the worker role serves /healthz, /readyz and /metrics only"}}'
            : '{"error":{"code":"PROVIDER_UNAVAILABLE","message":"starting up"}}',
        )
      } else if (gateway) gateway.handleRequest(req, res)
      else if (fastifyHandler && appReady) fastifyHandler(req, res)
      else {
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' })
        res.end('{"error":{"code":"PROVIDER_UNAVAILABLE","message":"starting up"}}')
      }
    })
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (gateway) gateway.handleUpgrade(req, socket, head)
      else socket.destroy()
    })
    // Every role listens: the worker for its probes only (it used to listen nowhere, issue 9 item 10).
    {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(config.server.port, config.server.host, () => {
          server.off('error', reject)
          resolve()
        })
      })
      cleanups.push(
        () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections()
            server.close(() => resolve())
          }),
      )
    }
    const address = server.address() as AddressInfo
    if (address && config.server.port === 0) {
      const host = address.address.includes(':') ? `[${address.address}]` : address.address
      const u = new URL(config.server.publicUrl)
      if (u.port === '0') config = withPublicUrl(config, `http://${host}:${address.port}`)
    }

    const hub = new RouteHub()
    const links: Links = {
      sessionUrl: (id) => sessionUrl(config.gateway, config.server.publicUrl, id),
      launchUrl: (id, userId, requester) =>
        launchUrl(
          config.gateway,
          config.server.publicUrl,
          id,
          tokens.issueLaunch({ instanceId: id, userId, requester }),
        ),
    }
    const progressBase = instanceCallbackBase(config).url.replace(/\/+$/, '')
    const progressUrl = (id: string) => `${progressBase}/api/v1/instances/${id}/progress`
    const pool = new PoolService({
      config,
      store,
      providers,
      routes: hub,
      log: log.child({ component: 'pool' }),
      metrics,
      faults: opts.faults,
      unavailable,
      progressUrl,
      appToken: (id, gen) => deriveAppToken(secret, id, gen),
    })
    cleanups.push(() => pool.close())
    await pool.publishAll()

    let worker: Worker | null = null
    if (role === 'all' || role === 'worker') {
      if (config.worker.enabled) {
        worker = new Worker({ config, store, pool, providers, log: log.child({ component: 'worker' }), metrics })
        worker.start()
        cleanups.push(() => worker!.stop())
      }
      if (role === 'worker') {
        const keys = new Keyring(store, config.auth.keys)
        workerProbes = createProbeHandler({
          readiness: () =>
            checkReadiness({
              store,
              templates: config.templates.map((t) => ({ name: t.name, unavailable: pool.unavailableReason(t.name) })),
              draining: () => lifecycle.draining(),
              extra: { worker: () => (worker ? undefined : 'worker.enabled is false') },
            }),
          metrics: metrics.registry,
          mayReadMetrics: async (key) => {
            if (config.auth.mode === 'none') return true
            if (key === undefined) return false
            const p = await keys.authenticate({ authorization: `Bearer ${key}` }).catch(() => undefined)
            return p?.kind === 'key' && p.role !== 'requester'
          },
        })
      }
    } else {
      // API-only replicas learn of the worker's changes by reading the store.
      const sync = new StoreRouteSync(store, pool, hub, log)
      sync.start()
      cleanups.push(async () => sync.stop())
    }

    const activity: ActivitySink = { recordActivity: (entries) => store.recordActivity(entries) }
    const nonces: NonceLedger = { consumeOnce: (nonce, expiresAt) => store.consumeNonce(nonce, expiresAt, Date.now()) }
    const keyring = new Keyring(store, config.auth.keys)

    let app: FastifyInstance | null = null
    if (role !== 'worker') {
      const deps: ApiDeps = {
        config,
        store,
        pool,
        keyring,
        links,
        log,
        metrics,
        providers,
        gatewayFeed: { routes: hub, activity, nonces, shuttingDown: lifecycle.shuttingDown },
        draining: () => lifecycle.draining(),
        shuttingDown: lifecycle.shuttingDown,
        plugins: [
          async (a) => {
            const { registerDashboard } = await import('./web/dashboard.js')
            await registerDashboard(a, { ...deps, tokens, routes: hub, login })
          },
          ...(opts.plugins ?? []),
        ],
      }
      app = await buildServer(deps, {
        serverFactory: (handler) => {
          fastifyHandler = handler
          return server
        },
      })
      await app.ready()
      appReady = true
      // Closed first: stop the worker, close proxied connections (flushing activity), then the listener and Fastify.
      cleanups.push(async () => {
        await worker?.stop()
        await gateway?.close()
        server.closeAllConnections()
        await app!.close()
      })
      gateway = createGateway({
        config: config.gateway,
        publicUrl: config.server.publicUrl,
        routes: hub,
        activity,
        nonces,
        tokens,
        log: log.child({ component: 'gateway' }),
        metrics: metrics.registry,
        fallback: (req, res) => {
          // The API and the dashboard: bounded body time (sessions are exempt: uploads to apps may be slow).
          armBodyTimeout(req, res, config.server.bodyTimeoutMs)
          fastifyHandler!(req, res)
        },
        trustProxy: config.server.trustProxy,
      })

      if (config.auth.mode === 'keys' && config.auth.bootstrapAdmin && !(await keyring.hasAdmin())) {
        const created = await keyring.create('admin', 'admin')
        opts.onBootstrapKey?.(created.secret, config.server.publicUrl)
        // Shown once on stdout, never through the logger (secrets are never logged).
        if (!opts.onBootstrapKey)
          process.stdout.write(`studiopool: created the first admin key (shown once): ${created.secret}\n`)
      }
    }

    // The worker role serves only its probes, on its own port: its banner names where it listens, not the public URL.
    const url =
      role === 'worker'
        ? `http://${address.address.includes(':') ? `[${address.address}]` : address.address}:${address.port}`
        : config.server.publicUrl
    log.info(
      { url, role, templates: config.templates.map((t) => t.name), store: config.store.driver },
      'studiopool is running',
    )
    const shutdown = async (graceMs: number) => {
      await lifecycle.drain([server], graceMs, () => gateway?.goAway())
      await closeAll()
    }
    return {
      config,
      url,
      address,
      store,
      pool,
      worker,
      app,
      gateway: gateway ?? null,
      tokens,
      metrics,
      close: closeAll,
      shutdown,
    }
  } catch (err) {
    await closeAll()
    throw err
  }
}

/**
 * The data directory holds the store, its secrets and the providers' bookkeeping: readable by the
 * server's account only (DESIGN.md "Security rules"), whatever the umask or an older install left.
 */
function secureDataDir(config: Config): void {
  mkdirSync(config.server.dataDir, { recursive: true, mode: 0o700 })
  chmodSync(config.server.dataDir, 0o700)
}

/** The SQLite file and its WAL and shared-memory files: 0600 (SQLite copies the main file's mode to the others). */
function secureStoreFile(config: Config): void {
  if (config.store.driver !== 'sqlite' || config.store.path === ':memory:' || config.store.path.startsWith('file:'))
    return
  for (const f of [config.store.path, `${config.store.path}-wal`, `${config.store.path}-shm`]) {
    try {
      chmodSync(f, 0o600)
    } catch {
      // not there (yet)
    }
  }
}
