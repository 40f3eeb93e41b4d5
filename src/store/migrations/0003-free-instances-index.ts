import { sql, type Kysely } from 'kysely'
import type { StoreMigration } from './index.js'

/**
 * Free instances by template and state, oldest first: the warm-hit claim
 * (`WHERE template = ? AND state = 'ready' AND owner_id IS NULL ORDER BY created_at, id LIMIT 1`) and
 * the warm-pool count read only free rows instead of walking past every assigned one.
 */
export const m0003FreeInstancesIndex: StoreMigration = {
  async up(db: Kysely<any>): Promise<void> {
    await db.schema
      .createIndex('instances_free_idx')
      .on('instances')
      .columns(['template', 'state', 'created_at', 'id'])
      .where(sql.ref('owner_id'), 'is', null)
      .execute()
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.dropIndex('instances_free_idx').execute()
  },
}
