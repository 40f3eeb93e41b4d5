import { sql } from 'kysely'
import type { Kysely } from 'kysely'
import type { StoreMigration } from './index.js'

/**
 * Users' use of shared instances (issue 14, docs/cost.md "Shared templates"): per instance, per
 * bucket of time (its start, epoch ms) and per user, their weight (seat-ms or requests) and their
 * part of the instance's busy time. One row per (instance, bucket, user), added to as the gateway
 * reports: rows grow with users × instances × buckets used, never with reports. The cost itself is
 * computed when read, from the instance's cost segments of that bucket.
 */
export const m0013SharedUsage: StoreMigration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema
      .createTable('shared_usage')
      .addColumn('instance_id', 'text', (c) => c.notNull())
      .addColumn('bucket', 'bigint', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('template', 'text', (c) => c.notNull())
      .addColumn('groups', 'text', (c) => c.notNull().defaultTo('[]'))
      .addColumn('weight', 'double precision', (c) => c.notNull())
      .addColumn('ms', 'double precision', (c) => c.notNull())
      .addPrimaryKeyConstraint('shared_usage_pk', ['instance_id', 'bucket', 'user_id'])
      .execute()
    await sql`create index shared_usage_bucket on shared_usage (bucket)`.execute(db)
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.dropTable('shared_usage').ifExists().execute()
  },
}
