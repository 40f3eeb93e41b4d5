import type { Kysely } from 'kysely'
import type { StoreMigration } from './index.js'

/** Instance.startedAt: when the current generation entered `provisioning` (start timeouts count from it). */
export const m0002InstanceStartedAt: StoreMigration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema.alterTable('instances').addColumn('started_at', 'bigint').execute()
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.alterTable('instances').dropColumn('started_at').execute()
  },
}
