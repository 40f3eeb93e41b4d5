import type { CreateTableBuilder, Kysely, Migration, MigrationProvider } from 'kysely'
import { m0001Initial } from './0001-initial.js'
import { m0002InstanceStartedAt } from './0002-instance-started-at.js'
import { m0003FreeInstancesIndex } from './0003-free-instances-index.js'
import { m0011RateLimits } from './0011-rate-limits.js'
import { m0005Costs } from './0005-costs.js'
import { m0008Ha } from './0008-ha.js'
import { m0012Webhooks } from './0012-webhooks.js'
import { m0013SharedUsage } from './0013-shared-usage.js'

export type SqlDialect = 'sqlite' | 'postgres'

/**
 * The little a migration needs from its dialect, supplied by the store adapter (sqlite/, postgres/),
 * so that no migration branches on which one runs.
 */
export interface MigrationDialect {
  /** Adds an auto-incrementing integer primary-key column (`bigserial` / `integer autoincrement`). */
  serialPrimaryKey(t: CreateTableBuilder<any, any>, column: string): CreateTableBuilder<any, any>
  /** Postgres: the trigger that NOTIFYs other replicas of a route change (0008-ha); absent on SQLite (one process). */
  installRouteNotify?(db: Kysely<any>): Promise<void>
  removeRouteNotify?(db: Kysely<any>): Promise<void>
}

/** A migration that may differ slightly per dialect (identity columns). */
export interface StoreMigration {
  up(db: Kysely<any>, dialect: MigrationDialect): Promise<void>
  down?(db: Kysely<any>, dialect: MigrationDialect): Promise<void>
}

/**
 * Every migration, in order. Names sort lexically (Kysely runs them by name). A static list
 * rather than Kysely's FileMigrationProvider, so it works under tsx and from a bundle alike.
 */
const MIGRATIONS: Readonly<Record<string, StoreMigration>> = {
  '0001-initial': m0001Initial,
  '0002-instance-started-at': m0002InstanceStartedAt,
  '0003-free-instances-index': m0003FreeInstancesIndex,
  '0011-rate-limits': m0011RateLimits,
  '0005-costs': m0005Costs,
  '0008-ha': m0008Ha,
  '0012-webhooks': m0012Webhooks,
  '0013-shared-usage': m0013SharedUsage,
}

/** The names of every migration this code knows, in order: a store with others is newer than this code. */
export const KNOWN_MIGRATIONS: readonly string[] = Object.keys(MIGRATIONS).sort()

/** The same list, under the name the store tests use. */
export const MIGRATION_NAMES = KNOWN_MIGRATIONS

export function migrationProvider(dialect: MigrationDialect): MigrationProvider {
  return {
    async getMigrations(): Promise<Record<string, Migration>> {
      const out: Record<string, Migration> = {}
      for (const [name, m] of Object.entries(MIGRATIONS)) {
        const down = m.down
        out[name] = {
          up: (db) => m.up(db, dialect),
          ...(down ? { down: (db: Kysely<any>) => down(db, dialect) } : {}),
        }
      }
      return out
    },
  }
}
