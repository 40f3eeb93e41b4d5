import { sql } from 'kysely'
import type { Kysely } from 'kysely'
import type { StoreMigration } from './index.js'

/**
 * The initial schema. State lists are spelled out here rather than imported from domain/ so
 * that this migration stays what it was when it ran, whatever the domain becomes later.
 */
export const m0001Initial: StoreMigration = {
  // eslint-disable-next-line max-lines-per-function -- a migration that ran stays as it was: one schema, read top to bottom
  async up(db: Kysely<any>, dialect): Promise<void> {
    const ts = 'bigint' // epoch ms; SQLite gives it INTEGER affinity
    await db.schema
      .createTable('instances')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('template', 'text', (c) => c.notNull())
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('owner_id', 'text')
      .addColumn('key_name', 'text')
      .addColumn('provider_ref', 'text')
      .addColumn('address', 'text')
      .addColumn('progress', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('progress_message', 'text', (c) => c.notNull().defaultTo(''))
      .addColumn('progress_token_hash', 'text')
      .addColumn('failure_reason', 'text')
      .addColumn('generation', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('created_at', ts, (c) => c.notNull())
      .addColumn('updated_at', ts, (c) => c.notNull())
      .addColumn('ready_at', ts)
      .addColumn('assigned_at', ts)
      .addColumn('last_activity_at', ts)
      .addColumn('ended_at', ts)
      .addColumn('end_reason', 'text')
      .addColumn('tags', 'text', (c) => c.notNull().defaultTo('{}'))
      .execute()
    // The last line of defence: one live instance per user and template (architecture.md "Store").
    await sql`create unique index instances_live_owner_uq on instances (owner_id, template)
      where owner_id is not null and state in ('queued', 'provisioning', 'starting', 'ready', 'suspended')`.execute(db)
    // Free-instance claims, queue order and per-template counts.
    await sql`create index instances_template_state on instances (template, state, created_at)`.execute(db)
    await sql`create index instances_state on instances (state)`.execute(db)
    await sql`create index instances_owner on instances (owner_id)`.execute(db)

    await db.schema
      .createTable('assignments')
      .$call((t) => dialect.serialPrimaryKey(t, 'id'))
      .addColumn('instance_id', 'text', (c) => c.notNull())
      .addColumn('template', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('key_name', 'text')
      .addColumn('started_at', ts, (c) => c.notNull())
      .addColumn('ended_at', ts)
      .addColumn('end_reason', 'text')
      .addColumn('cost', 'double precision')
      .execute()
    // History outlives the instance row (ended rows are purged), so no foreign key here.
    await sql`create unique index assignments_open_uq on assignments (instance_id) where ended_at is null`.execute(db)
    await sql`create index assignments_instance on assignments (instance_id, started_at)`.execute(db)
    await sql`create index assignments_user on assignments (user_id, started_at)`.execute(db)
    await sql`create index assignments_started on assignments (started_at)`.execute(db)

    await db.schema
      .createTable('api_keys')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('role', 'text', (c) => c.notNull())
      .addColumn('hash', 'text', (c) => c.notNull())
      .addColumn('created_at', ts, (c) => c.notNull())
      .addColumn('revoked_at', ts)
      .addColumn('last_used_at', ts)
      .execute()
    await sql`create unique index api_keys_name_uq on api_keys (name) where revoked_at is null`.execute(db)

    await db.schema
      .createTable('audit_log')
      .$call((t) => dialect.serialPrimaryKey(t, 'id'))
      .addColumn('at', ts, (c) => c.notNull())
      .addColumn('instance_id', 'text')
      .addColumn('event', 'text', (c) => c.notNull())
      .addColumn('actor', 'text')
      .addColumn('detail', 'text', (c) => c.notNull().defaultTo('{}'))
      .execute()
    await sql`create index audit_log_instance on audit_log (instance_id, id)`.execute(db)
    await sql`create index audit_log_at on audit_log (at)`.execute(db)

    await db.schema
      .createTable('nonces')
      .addColumn('nonce', 'text', (c) => c.primaryKey())
      .addColumn('expires_at', ts, (c) => c.notNull())
      .execute()
    await sql`create index nonces_expires on nonces (expires_at)`.execute(db)

    await db.schema
      .createTable('meta')
      .addColumn('key', 'text', (c) => c.primaryKey())
      .addColumn('value', 'text', (c) => c.notNull())
      .execute()

    await db.schema
      .createTable('state_samples')
      .addColumn('at', ts, (c) => c.notNull())
      .addColumn('template', 'text', (c) => c.notNull())
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('count', 'integer', (c) => c.notNull())
      .execute()
    await sql`create index state_samples_at on state_samples (at)`.execute(db)
  },

  async down(db: Kysely<any>): Promise<void> {
    for (const t of ['state_samples', 'meta', 'nonces', 'audit_log', 'api_keys', 'assignments', 'instances']) {
      await db.schema.dropTable(t).ifExists().execute()
    }
  },
}
