import type { Kysely } from 'kysely'
import type { StoreMigration } from './index.js'

/**
 * Webhook deliveries (issue 17): one row per event and webhook, kept as the delivery log. Unique
 * (webhook, event_id): every replica may enqueue the same event, one row results. `claimed_until`
 * lets one replica at a time attempt a row.
 */
export const m0012Webhooks: StoreMigration = {
  async up(db: Kysely<any>, dialect): Promise<void> {
    await dialect
      .serialPrimaryKey(db.schema.createTable('webhook_deliveries'), 'seq')
      .addColumn('webhook', 'text', (c) => c.notNull())
      .addColumn('event_id', 'text', (c) => c.notNull())
      .addColumn('event_type', 'text', (c) => c.notNull())
      .addColumn('body', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('attempts', 'integer', (c) => c.notNull())
      .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
      .addColumn('claimed_until', 'bigint', (c) => c.notNull())
      .addColumn('last_status', 'integer')
      .addColumn('last_error', 'text')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('delivered_at', 'bigint')
      .addUniqueConstraint('webhook_deliveries_event', ['webhook', 'event_id'])
      .execute()
    await db.schema
      .createIndex('webhook_deliveries_due')
      .on('webhook_deliveries')
      .columns(['status', 'webhook', 'seq'])
      .execute()
  },
  async down(db: Kysely<any>): Promise<void> {
    await db.schema.dropTable('webhook_deliveries').execute()
  },
}
