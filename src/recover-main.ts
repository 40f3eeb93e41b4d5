import pino, { type Logger } from 'pino'
import type { Config } from './config/types.js'
import { recoverFromProviders, type RecoveryReport } from './pool/recover.js'
import type { Provider } from './providers/provider.js'
import { loadProvider } from './providers/registry.js'
import { createStore } from './store/sql-store.js'

/**
 * The composition root of `studiopool recover` (src/pool/recover.ts does the work): the store and
 * the providers the configuration's templates use, nothing else (no listener, no worker). Run it
 * with the server stopped.
 */
export async function runRecover(
  config: Config,
  opts: { force?: boolean; log?: Logger } = {},
): Promise<RecoveryReport> {
  const log = opts.log ?? pino({ level: 'warn' })
  const store = await createStore(config.store, { log, poolId: config.pool.id })
  const providers = new Map<string, Provider>()
  try {
    const failed: { provider: string; error: string }[] = []
    for (const name of new Set(config.templates.map((t) => t.provider))) {
      try {
        const p = await loadProvider(name, {
          poolId: config.pool.id,
          dataDir: config.server.dataDir,
          settings: config.providers[name] ?? {},
          log: log.child({ provider: name }),
        })
        await p.init({ log })
        providers.set(name, p)
      } catch (err) {
        failed.push({ provider: name, error: (err as Error).message })
      }
    }
    const report = await recoverFromProviders({ config, store, providers, log, force: opts.force })
    return { ...report, failedProviders: [...failed, ...report.failedProviders] }
  } finally {
    for (const p of providers.values()) await p.close().catch(() => {})
    await store.close()
  }
}
