import type { CreateTableBuilder, Kysely, Migration, MigrationProvider } from 'kysely'
import { m0001Initial } from './0001-initial.js'
import { m0002InstanceStartedAt } from './0002-instance-started-at.js'
import { m0003FreeInstancesIndex } from './0003-free-instances-index.js'

export type SqlDialect = 'sqlite' | 'postgres'

/**
 * The little a migration needs from its dialect, supplied by the store adapter (sqlite/, postgres/),
 * so that no migration branches on which one runs.
 */
export interface MigrationDialect {
  /** Adds an auto-incrementing integer primary-key column (`bigserial` / `integer autoincrement`). */
  serialPrimaryKey(t: CreateTableBuilder<any, any>, column: string): CreateTableBuilder<any, any>
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
}

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
