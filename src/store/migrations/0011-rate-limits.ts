import type { Kysely } from 'kysely'
import type { StoreMigration } from './index.js'

/**
 * One token bucket per requester key (`auth.rateLimit`), shared by every replica on Postgres
 * (postgres/rate-limit.ts). SQLite keeps its buckets in memory (one process) and leaves it empty.
 */
export const m0011RateLimits: StoreMigration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema
      .createTable('rate_limits')
      .addColumn('key', 'text', (c) => c.primaryKey())
      .addColumn('tokens', 'double precision', (c) => c.notNull())
      .addColumn('at', 'bigint', (c) => c.notNull())
      .addColumn('allowed', 'boolean', (c) => c.notNull())
      .execute()
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.dropTable('rate_limits').execute()
  },
}
