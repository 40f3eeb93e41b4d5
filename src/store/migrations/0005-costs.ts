import { sql } from 'kysely'
import type { Kysely } from 'kysely'
import type { StoreMigration } from './index.js'

/**
 * Cost segments (docs/cost.md "Cost accrual"): each instance's running time as a chain of
 * stretches at one price and one attribution. At most one open segment (ended_at null) per
 * instance: the partial unique index is what keeps two writers from opening two.
 */
export const m0005Costs: StoreMigration = {
  async up(db: Kysely<any>, dialect): Promise<void> {
    const ts = 'bigint'
    await db.schema
      .createTable('cost_segments')
      .$call((t) => dialect.serialPrimaryKey(t, 'id'))
      .addColumn('instance_id', 'text', (c) => c.notNull())
      .addColumn('template', 'text', (c) => c.notNull())
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text')
      .addColumn('key_name', 'text')
      .addColumn('groups', 'text', (c) => c.notNull().defaultTo('[]'))
      .addColumn('market', 'text', (c) => c.notNull())
      .addColumn('rate_per_hour', 'double precision', (c) => c.notNull())
      .addColumn('currency', 'text', (c) => c.notNull())
      .addColumn('started_at', ts, (c) => c.notNull())
      .addColumn('ended_at', ts)
      .execute()
    await sql`create unique index cost_segments_open_uq on cost_segments (instance_id) where ended_at is null`.execute(
      db,
    )
    await sql`create index cost_segments_instance on cost_segments (instance_id, started_at)`.execute(db)
    await sql`create index cost_segments_started on cost_segments (started_at)`.execute(db)
    await sql`create index cost_segments_ended on cost_segments (ended_at)`.execute(db)
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.dropTable('cost_segments').ifExists().execute()
  },
}
