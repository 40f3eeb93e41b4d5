import type { Config } from './config/types.js'
import { createLogger } from './main.js'
import { createStore } from './store/sql-store.js'

export interface MigrateReport {
  /** The store's newest migration before, and after (null: none). */
  readonly before: string | null
  readonly after: string | null
  /** What was (or, with dryRun, would be) applied. */
  readonly pending: readonly string[]
}

/**
 * `studiopool migrate` (docs/ha.md "Upgrades"): applies the pending migrations of this release to the
 * store, with replicas of the previous release still running (migrations are expand-only until a
 * release says otherwise). Refuses, exit 2, a store whose schema is newer than this release.
 */
export async function runMigrate(config: Config, o: { dryRun: boolean }): Promise<MigrateReport> {
  const log = createLogger(config.server.logLevel)
  const store = await createStore(config.store, { log, poolId: config.pool.id, migrate: 'none' })
  try {
    const pending = await store.pendingMigrations()
    const { KNOWN_MIGRATIONS } = await import('./store/migrations/index.js')
    const applied = KNOWN_MIGRATIONS.filter((n) => !pending.includes(n))
    const before = applied.at(-1) ?? null
    if (o.dryRun) return { before, after: before, pending }
    await store.migrate()
    return { before, after: KNOWN_MIGRATIONS.at(-1) ?? null, pending }
  } finally {
    await store.close()
  }
}
