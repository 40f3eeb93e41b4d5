import type { Kysely } from 'kysely'
import type { StoreMigration } from './index.js'

/**
 * Several replicas (issue 16), an expand-only migration (docs/ha.md "Upgrades"): older replicas
 * keep working beside it, as they neither read nor write what it adds.
 * - `leader_epochs`: one row per pool, the worker leader's generation (fencing). A replica that
 *   takes the leader lock increments it; every write the worker makes carries its epoch and is
 *   refused once the row holds a newer one (sql-ops.ts, fence.ts).
 * - `instances.leader_epoch`: the epoch of the leader whose worker wrote the row last (null: an API
 *   request or an older replica), for audits of who acted.
 * - Postgres: a trigger that NOTIFYs `studiopool_routes` when a row's route changes (state, owner,
 *   address, generation, progress), so other replicas' gateways follow it at once
 *   (store-route-sync.ts); activity-only updates do not notify.
 */
export const m0008Ha: StoreMigration = {
  async up(db: Kysely<any>, dialect): Promise<void> {
    await db.schema
      .createTable('leader_epochs')
      .addColumn('pool_id', 'text', (c) => c.primaryKey())
      .addColumn('epoch', 'bigint', (c) => c.notNull())
      .addColumn('holder', 'text', (c) => c.notNull())
      .addColumn('acquired_at', 'bigint', (c) => c.notNull())
      .execute()
    await db.schema.alterTable('instances').addColumn('leader_epoch', 'bigint').execute()
    await dialect.installRouteNotify?.(db)
  },
  async down(db: Kysely<any>, dialect): Promise<void> {
    await dialect.removeRouteNotify?.(db)
    await db.schema.alterTable('instances').dropColumn('leader_epoch').execute()
    await db.schema.dropTable('leader_epochs').execute()
  },
}
