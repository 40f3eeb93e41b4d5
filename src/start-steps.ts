import { chmodSync, mkdirSync } from 'node:fs'
import type { Logger } from 'pino'
import { ConfigError, instanceCallbackBase, isLoopbackUrl } from './config/load.js'
import type { Config } from './config/types.js'
import type { Provider } from './providers/provider.js'
import { loadProvider } from './providers/registry.js'
import { createStore } from './store/sql-store.js'
import type { Store } from './store/store.js'
import { decideLogin, proxyTrustWarnings, type SessionReach } from './web/login-policy.js'

// The first steps of `start` (src/main.ts): the store, the providers, the dashboard login.

/** What `start` closes, in the reverse order of opening; a failing step is logged and the others still run. */
export class Cleanups {
  readonly #steps: (() => Promise<void>)[] = []
  constructor(private readonly log: Logger) {}
  push(step: () => Promise<void>): void {
    this.#steps.push(step)
  }
  readonly closeAll = async (): Promise<void> => {
    for (const c of this.#steps.reverse())
      await c().catch((err) => this.log.warn({ err: (err as Error).message }, 'close step failed'))
    this.#steps.length = 0
  }
}

/** The data directory (0700) and the store in it (an SQLite file: 0600). */
export async function openStore(config: Config, log: Logger): Promise<Store> {
  secureDataDir(config)
  const store = await createStore(config.store, {
    log,
    poolId: config.pool.id,
    dataDir: config.server.dataDir,
    migrate: config.ha.autoMigrate ? 'auto' : 'check',
    leaderTimeoutMs: config.ha.leaderTimeoutMs,
  })
  secureStoreFile(config)
  return store
}

/** Providers: only the ones templates use; a template whose program is missing is reported and refused, the others run. */
export async function buildProviders(
  config: Config,
  log: Logger,
  cleanups: Cleanups,
): Promise<{ providers: Map<string, Provider>; unavailable: Map<string, string> }> {
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
        const loaded = p
        cleanups.push(() => loaded.close())
      } catch (err) {
        if (err instanceof ConfigError) throw err
        unavailable.set(t.name, `provider ${t.provider}: ${(err as Error).message}`)
        continue
      }
    }
    const problems = p.validateTemplate(t)
    if (problems.length === 0 && p.checkTemplate) problems.push(...(await p.checkTemplate(t, { log })))
    if (problems.length) unavailable.set(t.name, problems.join('; '))
  }
  for (const [name, why] of unavailable) log.error({ template: name }, `template "${name}" is unavailable: ${why}`)
  return { providers, unavailable }
}

/**
 * Templates that cannot serve because of their configuration (an unknown provider, settings the
 * provider rejects, a missing program or image) stop `serve` with exit 2 (issue 17), unless it was
 * started `--degraded`: then they answer TEMPLATE_UNAVAILABLE and the others serve.
 */
export function refuseUnavailable(unavailable: ReadonlyMap<string, string>): void {
  if (unavailable.size === 0) return
  throw new ConfigError(
    [...unavailable].map(([name, why]) => ({ path: `/templates/${name}`, message: why })),
    'start',
    'studiopool serve --degraded starts anyway: these templates answer 503 TEMPLATE_UNAVAILABLE, the others serve',
  )
}

/** Logins that sessions (or anyone behind a same-host proxy) could borrow are refused (issue 8). */
export function decideDashboardLogin(
  config: Config,
  providers: ReadonlyMap<string, Provider>,
  log: Logger,
): ReturnType<typeof decideLogin> {
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
  return login
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
 * The data directory holds the store, its secrets and the providers' bookkeeping: readable by the
 * server's account only (architecture.md "Security rules"), whatever the umask or an older install left.
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
