/**
 * The Store (store.ts) over Kysely, for SQLite (better-sqlite3, embedded default) and Postgres (pg).
 *
 * Atomicity (DESIGN.md "Store"):
 * - Postgres: `withPoolLock` is a transaction that first takes `pg_advisory_xact_lock(key(poolId))`,
 *   so cap checks and inserts are serialized across connections and replicas; `assignWarm` is one
 *   statement that locks its row with `FOR UPDATE SKIP LOCKED`; the partial unique index on
 *   (owner_id, template) over live states rejects a second live instance whatever the caller did.
 * - SQLite: Kysely's SQLite driver has one connection behind a mutex, so a transaction excludes
 *   every other statement of this process. Transactions open with `BEGIN IMMEDIATE` (taking the
 *   write lock up front) so that another process on the same file waits on busy_timeout instead
 *   of failing a lock upgrade half-way. SQLite is for one server process; use Postgres for replicas.
 *   `assignWarm` runs a batch of warm claims as one synchronous transaction of prepared statements.
 */
import { sql } from 'kysely'
import type { Kysely, Selectable, SelectQueryBuilder, Transaction } from 'kysely'
import type pg from 'pg'
import type BetterSqlite3 from 'better-sqlite3'
import { Migrator } from 'kysely'
import pino from 'pino'
import type { Logger } from 'pino'
import { ACTIVE_STATES, LIVE_STATES } from '../domain/instance.js'
import type { Assignment, AuditEvent, EndReason, Instance, InstanceState } from '../domain/instance.js'
import type { ApiKey, KeyRole } from '../domain/keys.js'
import { ConflictError } from '../domain/errors.js'
import { LiveInstanceExistsError } from './store.js'
import type {
  WarmClaimInput,
  WarmClaimResult,
  HistoryFilter,
  InstanceFilter,
  InstancePatch,
  NewInstance,
  StateSample,
  Store,
  StoreHealth,
  StoreOps,
  StoreTx,
  UpdateCondition,
} from './store.js'
import type { Database, InstancesTable, AssignmentsTable, ApiKeysTable, AuditLogTable } from './tables.js'
import { advisoryKey, openPostgres, openSqlite, uniqueViolation } from './dialects.js'
import type { OpenedDb, StoreConfig } from './dialects.js'
import { migrationProvider } from './migrations/index.js'
import { guardStore } from './store-guard.js'
import { refuseEmptyInUse, writeMarker } from './store-check.js'
import { existsSync, statSync } from 'node:fs'
import type { SqlDialect } from './migrations/index.js'

export type { StoreConfig } from './dialects.js'

export interface StoreOptions {
  readonly log: Logger
  /** Pool id (config.pool.id): the advisory-lock keys derive from it. */
  readonly poolId: string
  /**
   * The server's data directory. When given, the store refuses to start empty or damaged where
   * the directory shows it was in use, and records that it is in use (store-check.ts).
   */
  readonly dataDir?: string
  /** Skip the empty-store refusal (still writes the marker): for a command that rebuilds an emptied store on purpose (`recover`). */
  readonly allowEmptyInUse?: boolean
}

/** Opens the store, runs pending migrations and returns it. Call `close()` when done. */
export async function createStore(cfg: StoreConfig, opts: StoreOptions): Promise<Store> {
  const dataDir = opts.dataDir
  const refuseEmpty = dataDir !== undefined && !opts.allowEmptyInUse
  if (refuseEmpty && cfg.driver === 'sqlite' && cfg.path !== ':memory:' && !cfg.path.startsWith('file:')) {
    // Before opening, which would create the file.
    if (!existsSync(cfg.path)) refuseEmptyInUse(cfg, dataDir, 'missing')
    else if (statSync(cfg.path).size === 0) refuseEmptyInUse(cfg, dataDir, 'empty (0 bytes)')
  }
  const opened =
    cfg.driver === 'sqlite'
      ? openSqlite(cfg.path, { integrityCheck: dataDir !== undefined })
      : openPostgres(cfg.url, cfg.poolSize, opts.log, cfg.timeouts)
  const store = new SqlStore(opened, opts)
  try {
    if (refuseEmpty && (await store.isEmpty())) refuseEmptyInUse(cfg, dataDir, 'empty (no studiopool tables)')
    await store.migrate()
    if (dataDir) writeMarker(cfg, dataDir)
  } catch (err) {
    await store.close().catch(() => {})
    throw err
  }
  return guardStore(store, { log: opts.log })
}

/**
 * For tests, benches and scripts: `sqlite:/abs/path.db`, `sqlite:relative.db`, `sqlite::memory:`
 * or a `postgres://` / `postgresql://` URL.
 */
export async function createStoreFromUrl(
  url: string,
  opts: Partial<StoreOptions> & { poolSize?: number } = {},
): Promise<Store> {
  const full: StoreOptions = { log: opts.log ?? pino({ level: 'silent' }), poolId: opts.poolId ?? 'default' }
  if (url.startsWith('sqlite:')) return createStore({ driver: 'sqlite', path: url.slice('sqlite:'.length) }, full)
  if (/^postgres(ql)?:\/\//.test(url))
    return createStore({ driver: 'postgres', url, poolSize: opts.poolSize ?? 10 }, full)
  throw new Error(`unsupported store URL (want sqlite:PATH or postgres://…): ${url.replace(/\/\/[^@/]*@/, '//***@')}`)
}

// ---------------------------------------------------------------------------------------------
// Row mapping

type Db = Kysely<Database> | Transaction<Database>

function parseJsonObject<T>(text: string | null | undefined, fallback: T): T {
  if (!text) return fallback
  try {
    const v: unknown = JSON.parse(text)
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as T) : fallback
  } catch {
    return fallback
  }
}

function toInstance(r: InstancesTable): Instance {
  return {
    id: r.id,
    template: r.template,
    state: r.state as InstanceState,
    ownerId: r.owner_id,
    keyName: r.key_name,
    providerRef: r.provider_ref,
    address: r.address,
    progress: Number(r.progress),
    progressMessage: r.progress_message,
    progressTokenHash: r.progress_token_hash,
    failureReason: r.failure_reason,
    generation: Number(r.generation),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
    startedAt: numOrNull(r.started_at),
    readyAt: numOrNull(r.ready_at),
    assignedAt: numOrNull(r.assigned_at),
    lastActivityAt: numOrNull(r.last_activity_at),
    endedAt: numOrNull(r.ended_at),
    endReason: r.end_reason as EndReason | null,
    tags: parseJsonObject<Record<string, string>>(r.tags, {}),
  }
}

function numOrNull(v: number | null): number | null {
  return v === null || v === undefined ? null : Number(v)
}

/** Instance field → column, for patches. */
const INSTANCE_COLUMNS = {
  state: 'state',
  ownerId: 'owner_id',
  keyName: 'key_name',
  providerRef: 'provider_ref',
  address: 'address',
  progress: 'progress',
  progressMessage: 'progress_message',
  progressTokenHash: 'progress_token_hash',
  failureReason: 'failure_reason',
  generation: 'generation',
  updatedAt: 'updated_at',
  startedAt: 'started_at',
  readyAt: 'ready_at',
  assignedAt: 'assigned_at',
  lastActivityAt: 'last_activity_at',
  endedAt: 'ended_at',
  endReason: 'end_reason',
  tags: 'tags',
} as const satisfies Record<keyof InstancePatch, keyof InstancesTable>

function patchToRow(patch: InstancePatch): Partial<InstancesTable> {
  const row: Record<string, unknown> = {}
  for (const [field, col] of Object.entries(INSTANCE_COLUMNS)) {
    const v = (patch as Record<string, unknown>)[field]
    if (v === undefined) continue
    row[col] = field === 'tags' ? JSON.stringify(v) : v
  }
  return row as Partial<InstancesTable>
}

function toAssignment(r: Selectable<AssignmentsTable>): Assignment {
  return {
    id: Number(r.id),
    instanceId: r.instance_id,
    template: r.template,
    userId: r.user_id,
    keyName: r.key_name,
    startedAt: Number(r.started_at),
    endedAt: numOrNull(r.ended_at),
    endReason: r.end_reason as EndReason | null,
    cost: r.cost === null ? null : Number(r.cost),
  }
}

function toKey(r: ApiKeysTable): ApiKey {
  return {
    id: r.id,
    name: r.name,
    role: r.role as KeyRole,
    hash: r.hash,
    createdAt: Number(r.created_at),
    revokedAt: numOrNull(r.revoked_at),
    lastUsedAt: numOrNull(r.last_used_at),
  }
}

function toAudit(r: Selectable<AuditLogTable>): AuditEvent {
  return {
    id: Number(r.id),
    at: Number(r.at),
    instanceId: r.instance_id,
    event: r.event,
    actor: r.actor,
    detail: parseJsonObject<Record<string, unknown>>(r.detail, {}),
  }
}

function translateInstanceError(err: unknown): never {
  const v = uniqueViolation(err)
  if (v?.index === 'instances_live_owner_uq') throw new LiveInstanceExistsError()
  if (v?.index === 'instances_pkey') throw new ConflictError('an instance with this id exists')
  throw err
}

const LIVE = [...LIVE_STATES] as string[]
const ACTIVE = [...ACTIVE_STATES] as string[]
/** LIVE as an SQL list of literals, for the hand-written warm-hit statements. */
const LIVE_SQL = LIVE.map((st) => `'${st}'`).join(', ')
/** How often consumeNonce purges expired nonces, ms. */
const NONCE_PURGE_EVERY_MS = 60_000
/** Rows per INSERT for bulk inserts (well under SQLite's 32,766 bound parameters). */
const INSERT_CHUNK = 500

// ---------------------------------------------------------------------------------------------
// Operations: the same code on the pool (outside a transaction) and inside one.

interface Shared {
  readonly dialect: SqlDialect
  /** Shared by the store and its transactions. */
  readonly nonces: { lastPurge: number }
  /** Runs fn in a transaction (a fresh one, or the current one when already inside). */
  readonly inTransaction: <T>(fn: (ops: SqlOps) => Promise<T>) => Promise<T>
}

class SqlOps implements StoreOps {
  readonly #db: Db
  readonly #shared: Shared

  constructor(db: Db, shared: Shared) {
    this.#db = db
    this.#shared = shared
  }

  async getInstance(id: string): Promise<Instance | undefined> {
    const r = await this.#db.selectFrom('instances').selectAll().where('id', '=', id).executeTakeFirst()
    return r ? toInstance(r) : undefined
  }

  #filtered<Q extends SelectQueryBuilder<Database, 'instances', any>>(q: Q, filter: InstanceFilter): Q {
    if (filter.template !== undefined) q = q.where('template', '=', filter.template) as Q
    if (filter.states !== undefined) q = q.where('state', 'in', [...filter.states]) as Q
    if (filter.ownerId !== undefined) q = q.where('owner_id', '=', filter.ownerId) as Q
    if (filter.assigned === true) q = q.where('owner_id', 'is not', null) as Q
    if (filter.assigned === false) q = q.where('owner_id', 'is', null) as Q
    return q
  }

  async listInstances(filter: InstanceFilter = {}): Promise<Instance[]> {
    if (filter.states !== undefined && filter.states.length === 0) return []
    let q = this.#filtered(this.#db.selectFrom('instances').selectAll(), filter).orderBy('created_at').orderBy('id')
    if (filter.limit !== undefined) q = q.limit(filter.limit)
    return (await q.execute()).map(toInstance)
  }

  async countInstances(filter: InstanceFilter = {}): Promise<number> {
    if (filter.states !== undefined && filter.states.length === 0) return 0
    // No ORDER BY: counting reads the index range only. `limit` caps the rows counted.
    let inner = this.#filtered(this.#db.selectFrom('instances').select('id'), filter)
    if (filter.limit !== undefined) inner = inner.limit(filter.limit)
    const row = await this.#db
      .selectFrom(inner.as('matching'))
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow()
    return Number(row.n)
  }

  async listAssignedIds(filter: { keyName?: string } = {}): Promise<string[]> {
    // Same predicate as the partial unique index instances_live_owner_uq, so the planner can use it.
    let q = this.#db.selectFrom('instances').select('id').where('owner_id', 'is not', null).where('state', 'in', LIVE)
    if (filter.keyName !== undefined) q = q.where('key_name', '=', filter.keyName)
    const rows = await q.execute()
    return rows.map((r) => r.id)
  }

  async countActive(): Promise<{ total: number; byTemplate: Record<string, number> }> {
    const rows = await this.#db
      .selectFrom('instances')
      .select(['template', (eb) => eb.fn.countAll<number>().as('n')])
      .where('state', 'in', ACTIVE)
      .groupBy('template')
      .execute()
    const byTemplate: Record<string, number> = {}
    let total = 0
    for (const r of rows) {
      byTemplate[r.template] = Number(r.n)
      total += Number(r.n)
    }
    return { total, byTemplate }
  }

  async countByState(): Promise<{ template: string; state: InstanceState; count: number }[]> {
    const rows = await this.#db
      .selectFrom('instances')
      .select(['template', 'state', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy(['template', 'state'])
      .orderBy('template')
      .orderBy('state')
      .execute()
    return rows.map((r) => ({ template: r.template, state: r.state as InstanceState, count: Number(r.n) }))
  }

  async findLive(userId: string, template: string): Promise<Instance | undefined> {
    const r = await this.#db
      .selectFrom('instances')
      .selectAll()
      .where('owner_id', '=', userId)
      .where('template', '=', template)
      .where('state', 'in', LIVE)
      .executeTakeFirst()
    return r ? toInstance(r) : undefined
  }

  async insertInstance(row: NewInstance): Promise<Instance> {
    const now = Date.now()
    const createdAt = row.createdAt ?? now
    const values: InstancesTable = {
      id: row.id,
      template: row.template,
      state: row.state,
      owner_id: row.ownerId,
      key_name: row.keyName,
      provider_ref: row.providerRef ?? null,
      address: row.address ?? null,
      progress: row.progress ?? 0,
      progress_message: row.progressMessage ?? '',
      progress_token_hash: row.progressTokenHash ?? null,
      failure_reason: row.failureReason ?? null,
      generation: row.generation ?? 0,
      created_at: createdAt,
      updated_at: row.updatedAt ?? createdAt,
      started_at: row.startedAt ?? null,
      ready_at: row.readyAt ?? null,
      assigned_at: row.assignedAt ?? null,
      last_activity_at: row.lastActivityAt ?? null,
      ended_at: row.endedAt ?? null,
      end_reason: row.endReason ?? null,
      tags: JSON.stringify(row.tags ?? {}),
    }
    try {
      const r = await this.#db.insertInto('instances').values(values).returningAll().executeTakeFirstOrThrow()
      return toInstance(r)
    } catch (err) {
      translateInstanceError(err)
    }
  }

  async updateInstance(id: string, patch: InstancePatch, cond: UpdateCondition = {}): Promise<Instance | undefined> {
    const set = patchToRow(patch)
    if (set.updated_at === undefined) set.updated_at = Date.now()
    let q = this.#db.updateTable('instances').set(set).where('id', '=', id)
    if (cond.states !== undefined) {
      if (cond.states.length === 0) return undefined
      q = q.where('state', 'in', [...cond.states])
    }
    if (cond.generation !== undefined) q = q.where('generation', '=', cond.generation)
    if (cond.ownerId === null) q = q.where('owner_id', 'is', null)
    else if (cond.ownerId !== undefined) q = q.where('owner_id', '=', cond.ownerId)
    try {
      const r = await q.returningAll().executeTakeFirst()
      return r ? toInstance(r) : undefined
    } catch (err) {
      translateInstanceError(err)
    }
  }

  async deleteInstance(id: string): Promise<void> {
    await this.#db.deleteFrom('instances').where('id', '=', id).execute()
  }

  async queuePosition(id: string): Promise<number | null> {
    const me = await this.#db
      .selectFrom('instances')
      .select(['template', 'state', 'created_at', 'id'])
      .where('id', '=', id)
      .executeTakeFirst()
    if (!me || me.state !== 'queued') return null
    // Same order as listQueued: (created_at, id).
    const r = await this.#db
      .selectFrom('instances')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('template', '=', me.template)
      .where('state', '=', 'queued')
      .where((eb) =>
        eb.or([
          eb('created_at', '<', me.created_at),
          eb.and([eb('created_at', '=', me.created_at), eb('id', '<', me.id)]),
        ]),
      )
      .executeTakeFirstOrThrow()
    return Number(r.n) + 1
  }

  async listQueued(template?: string, limit?: number): Promise<Instance[]> {
    let q = this.#db.selectFrom('instances').selectAll().where('state', '=', 'queued')
    if (template !== undefined) q = q.where('template', '=', template)
    q = q.orderBy('created_at').orderBy('id')
    if (limit !== undefined) q = q.limit(limit)
    return (await q.execute()).map(toInstance)
  }

  async recordActivity(entries: readonly { readonly id: string; readonly at: number }[]): Promise<void> {
    if (entries.length === 0) return
    const latest = new Map<string, number>()
    for (const e of entries) latest.set(e.id, Math.max(latest.get(e.id) ?? -Infinity, e.at))
    if (this.#shared.dialect === 'postgres') {
      // One statement for the whole batch.
      const ids = [...latest.keys()]
      const ats = ids.map((id) => latest.get(id)!)
      await sql`update instances as i set last_activity_at = v.at
        from unnest(${ids}::text[], ${ats}::bigint[]) as v(id, at)
        where i.id = v.id and (i.last_activity_at is null or i.last_activity_at < v.at)`.execute(this.#db)
      return
    }
    // SQLite: one transaction, one cheap statement per instance (no network round trips).
    await this.#shared.inTransaction(async (ops) => {
      for (const [id, at] of latest) {
        await ops.#db
          .updateTable('instances')
          .set({ last_activity_at: at })
          .where('id', '=', id)
          .where((eb) => eb.or([eb('last_activity_at', 'is', null), eb('last_activity_at', '<', at)]))
          .execute()
      }
    })
  }

  async openAssignment(a: Omit<Assignment, 'id' | 'endedAt' | 'endReason' | 'cost'>): Promise<Assignment> {
    try {
      const r = await this.#db
        .insertInto('assignments')
        .values({
          instance_id: a.instanceId,
          template: a.template,
          user_id: a.userId,
          key_name: a.keyName,
          started_at: a.startedAt,
          ended_at: null,
          end_reason: null,
          cost: null,
        })
        .returningAll()
        .executeTakeFirstOrThrow()
      return toAssignment(r)
    } catch (err) {
      if (uniqueViolation(err)?.index === 'assignments_open_uq')
        throw new ConflictError('the instance already has an open assignment')
      throw err
    }
  }

  async closeAssignment(
    instanceId: string,
    endedAt: number,
    reason: EndReason,
    cost: number | null,
  ): Promise<Assignment | undefined> {
    const r = await this.#db
      .updateTable('assignments')
      .set({ ended_at: endedAt, end_reason: reason, cost })
      .where('instance_id', '=', instanceId)
      .where('ended_at', 'is', null)
      .returningAll()
      .executeTakeFirst()
    return r ? toAssignment(r) : undefined
  }

  async listHistory(filter: HistoryFilter = {}): Promise<Assignment[]> {
    let q = this.#db.selectFrom('assignments').selectAll()
    if (filter.userId !== undefined) q = q.where('user_id', '=', filter.userId)
    if (filter.template !== undefined) q = q.where('template', '=', filter.template)
    if (filter.instanceId !== undefined) q = q.where('instance_id', '=', filter.instanceId)
    // Overlap of [started_at, ended_at ?? ∞) with [from, to).
    if (filter.to !== undefined) q = q.where('started_at', '<', filter.to)
    if (filter.from !== undefined) {
      const from = filter.from
      q = q.where((eb) => eb.or([eb('ended_at', 'is', null), eb('ended_at', '>', from)]))
    }
    if (filter.endReason !== undefined) q = q.where('end_reason', '=', filter.endReason)
    if (filter.open === true) q = q.where('ended_at', 'is', null)
    if (filter.open === false) q = q.where('ended_at', 'is not', null)
    q = q.orderBy('started_at', 'desc').orderBy('id', 'desc')
    if (filter.limit !== undefined) q = q.limit(filter.limit)
    if (filter.offset !== undefined) {
      // SQLite needs a LIMIT before OFFSET.
      if (filter.limit === undefined) q = q.limit(Number.MAX_SAFE_INTEGER)
      q = q.offset(filter.offset)
    }
    return (await q.execute()).map(toAssignment)
  }

  async audit(e: Omit<AuditEvent, 'id'>): Promise<void> {
    await this.#db
      .insertInto('audit_log')
      .values({
        at: e.at,
        instance_id: e.instanceId,
        event: e.event,
        actor: e.actor,
        detail: JSON.stringify(e.detail ?? {}),
      })
      .execute()
  }

  async listAudit(filter: { instanceId?: string; limit?: number } = {}): Promise<AuditEvent[]> {
    let q = this.#db.selectFrom('audit_log').selectAll()
    if (filter.instanceId !== undefined) q = q.where('instance_id', '=', filter.instanceId)
    q = q.orderBy('id', 'desc').limit(filter.limit ?? 1000)
    return (await q.execute()).map(toAudit)
  }

  async insertKey(key: ApiKey): Promise<void> {
    try {
      await this.#db
        .insertInto('api_keys')
        .values({
          id: key.id,
          name: key.name,
          role: key.role,
          hash: key.hash,
          created_at: key.createdAt,
          revoked_at: key.revokedAt,
          last_used_at: key.lastUsedAt,
        })
        .execute()
    } catch (err) {
      const v = uniqueViolation(err)
      if (v?.index === 'api_keys_name_uq') throw new ConflictError(`an API key named '${key.name}' exists`)
      if (v?.index === 'api_keys_pkey') throw new ConflictError('an API key with this id exists')
      throw err
    }
  }

  async getKey(id: string): Promise<ApiKey | undefined> {
    const r = await this.#db.selectFrom('api_keys').selectAll().where('id', '=', id).executeTakeFirst()
    return r ? toKey(r) : undefined
  }

  async listKeys(): Promise<ApiKey[]> {
    return (await this.#db.selectFrom('api_keys').selectAll().orderBy('created_at').orderBy('id').execute()).map(toKey)
  }

  async revokeKey(id: string, at: number): Promise<boolean> {
    const r = await this.#db
      .updateTable('api_keys')
      .set({ revoked_at: at })
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst()
    return Number(r.numUpdatedRows) > 0
  }

  async touchKey(id: string, at: number): Promise<void> {
    await this.#db.updateTable('api_keys').set({ last_used_at: at }).where('id', '=', id).execute()
  }

  async consumeNonce(nonce: string, expiresAt: number, now: number): Promise<boolean> {
    if (now - this.#shared.nonces.lastPurge >= NONCE_PURGE_EVERY_MS) {
      this.#shared.nonces.lastPurge = now
      await this.#db.deleteFrom('nonces').where('expires_at', '<', now).execute()
    }
    const r = await this.#db
      .insertInto('nonces')
      .values({ nonce, expires_at: expiresAt })
      .onConflict((oc) => oc.column('nonce').doNothing())
      .executeTakeFirst()
    return Number(r.numInsertedOrUpdatedRows ?? 0n) > 0
  }

  async getMeta(key: string): Promise<string | undefined> {
    const r = await this.#db.selectFrom('meta').select('value').where('key', '=', key).executeTakeFirst()
    return r?.value
  }

  async setMeta(key: string, value: string): Promise<void> {
    await this.#db
      .insertInto('meta')
      .values({ key, value })
      .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
      .execute()
  }

  async setMetaIfAbsent(key: string, value: string): Promise<string> {
    await this.#db
      .insertInto('meta')
      .values({ key, value })
      .onConflict((oc) => oc.column('key').doNothing())
      .execute()
    const stored = await this.getMeta(key)
    // Only a concurrent delete could make it vanish; the value we tried is then the honest answer.
    return stored ?? value
  }

  async recordStateSamples(samples: readonly StateSample[]): Promise<void> {
    for (let i = 0; i < samples.length; i += INSERT_CHUNK) {
      const chunk = samples.slice(i, i + INSERT_CHUNK)
      await this.#db
        .insertInto('state_samples')
        .values(chunk.map((s) => ({ at: s.at, template: s.template, state: s.state, count: s.count })))
        .execute()
    }
  }

  async listStateSamples(from: number, to: number): Promise<StateSample[]> {
    const rows = await this.#db
      .selectFrom('state_samples')
      .selectAll()
      .where('at', '>=', from)
      .where('at', '<', to)
      .orderBy('at')
      .orderBy('template')
      .orderBy('state')
      .execute()
    return rows.map((r) => ({
      at: Number(r.at),
      template: r.template,
      state: r.state as InstanceState,
      count: Number(r.count),
    }))
  }

  async purgeStateSamples(before: number): Promise<number> {
    const res = await this.#db.deleteFrom('state_samples').where('at', '<', before).executeTakeFirst()
    return Number(res.numDeletedRows ?? 0)
  }
}

// ---------------------------------------------------------------------------------------------
// The store

class SqlStore extends SqlOps implements Store {
  readonly dialect: SqlDialect
  readonly #db: Kysely<Database>
  readonly #opened: OpenedDb
  readonly #log: Logger
  readonly #assignKey: string
  readonly #leaderKey: string
  readonly #nonces: { lastPurge: number }
  #leader: pg.Client | undefined
  #leading = false
  #warmBatch: WarmBatch | undefined
  #closed = false

  constructor(opened: OpenedDb, opts: StoreOptions) {
    const nonces = { lastPurge: 0 }
    super(opened.db, { dialect: opened.dialect, nonces, inTransaction: (fn) => this.#begin(fn) })
    this.#nonces = nonces
    this.dialect = opened.dialect
    this.#db = opened.db
    this.#opened = opened
    this.#log = opts.log
    this.#assignKey = advisoryKey(opts.poolId, 'assign')
    this.#leaderKey = advisoryKey(opts.poolId, 'leader')
  }

  /**
   * A new transaction whose ops run their own "transactional" methods (recordActivity)
   * inline. With `poolLock`, Postgres takes the pool's advisory transaction lock first.
   * Inside fn, use only the ops passed in: on SQLite, calling the store itself would wait for the
   * connection this transaction holds.
   */
  async #begin<T>(fn: (ops: SqlOps) => Promise<T>, poolLock = false): Promise<T> {
    const inner: Shared = { dialect: this.dialect, nonces: this.#nonces, inTransaction: (f) => f(ops) }
    let ops!: SqlOps
    if (this.dialect === 'sqlite') {
      // Kysely's transaction() issues a plain BEGIN; we want BEGIN IMMEDIATE, so we drive the
      // single connection ourselves. connection() holds the driver's mutex for the whole block.
      return this.#db.connection().execute(async (conn) => {
        await sql`begin immediate`.execute(conn)
        ops = new SqlOps(conn, inner)
        try {
          const result = await fn(ops)
          await sql`commit`.execute(conn)
          return result
        } catch (err) {
          try {
            await sql`rollback`.execute(conn)
          } catch {
            // SQLite may already have rolled back (e.g. after SQLITE_FULL); the original error matters.
          }
          throw err
        }
      })
    }
    return this.#db.transaction().execute(async (trx) => {
      if (poolLock) await sql`select pg_advisory_xact_lock(${this.#assignKey}::bigint)`.execute(trx)
      ops = new SqlOps(trx, inner)
      return fn(ops)
    })
  }

  async assignWarm(claims: readonly WarmClaimInput[], now: number): Promise<WarmClaimResult[]> {
    try {
      if (this.dialect === 'sqlite') {
        const raw = this.#opened.sqlite! // openSqlite always sets it
        // Kysely's connection() holds its one connection's mutex, so no Kysely transaction is open
        // while this synchronous one runs; prepared statements skip building and compiling SQL.
        return await this.#db
          .connection()
          .execute(async () => (this.#warmBatch ??= prepareWarmBatch(raw)).immediate(claims, now))
      }
      const out: WarmClaimResult[] = []
      for (const c of claims) out.push(await this.#assignWarmPg(c, now))
      return out
    } catch (err) {
      translateInstanceError(err)
    }
  }

  /**
   * One statement, so one round trip and no explicit transaction: the live check, the claim
   * (FOR UPDATE SKIP LOCKED, so concurrent claims take different rows), the assignment and the
   * audit row commit together or not at all.
   */
  async #assignWarmPg(c: WarmClaimInput, now: number): Promise<WarmClaimResult> {
    // Named: each connection parses and plans it once.
    const r = await this.#opened.pgPool!.query<InstancesTable & { outcome: 'existing' | 'assigned' }>({
      name: 'studiopool_assign_warm',
      text: ASSIGN_WARM_PG,
      values: [c.template, c.userId, c.keyName, now, warmAuditDetail(c.userId)],
    })
    const row = r.rows[0]
    if (!row) return {}
    return row.outcome === 'existing' ? { existing: toInstance(row) } : { assigned: toInstance(row) }
  }

  async migrate(): Promise<void> {
    let migrationTableSchema: string | undefined
    if (this.dialect === 'postgres') {
      // Kysely's "does the migration table exist" check looks in every schema; pin it to ours so
      // that several schemas (tests, several pools) in one database do not see each other's.
      const r = await sql<{ s: string | null }>`select current_schema() as s`.execute(this.#db)
      migrationTableSchema = r.rows[0]?.s ?? undefined
    }
    const migrator = new Migrator({
      db: this.#db,
      provider: migrationProvider(this.dialect),
      migrationTableSchema,
      migrationTableName: 'studiopool_migration',
      migrationLockTableName: 'studiopool_migration_lock',
    })
    // Postgres: Kysely runs the migrations in one transaction under pg_advisory_xact_lock, so two
    // replicas starting at once apply each migration once. SQLite: one connection, one process.
    const { error, results } = await migrator.migrateToLatest()
    for (const r of results ?? []) {
      if (r.status === 'Success') this.#log.info({ migration: r.migrationName }, 'store migration applied')
      else if (r.status === 'Error') this.#log.error({ migration: r.migrationName }, 'store migration failed')
    }
    if (error) throw error instanceof Error ? error : new Error(`store migration failed: ${String(error)}`)
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.#db)
  }

  /** True when no studiopool table exists yet (a new store, or an emptied one). */
  async isEmpty(): Promise<boolean> {
    if (this.dialect === 'sqlite') {
      const r = await sql<{
        n: number
      }>`select count(*) as n from sqlite_master where type = 'table' and name = 'studiopool_migration'`.execute(
        this.#db,
      )
      return Number(r.rows[0]?.n ?? 0) === 0
    }
    const r = await sql<{ t: string | null }>`select to_regclass('studiopool_migration')::text as t`.execute(this.#db)
    return !r.rows[0]?.t
  }

  async probeWrite(now: number): Promise<void> {
    await this.setMeta('readyz.probe', String(now))
  }

  health(): StoreHealth {
    // Filled in by the guard (store-guard.ts), which sees every call.
    return {}
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.#begin(fn)
  }

  withPoolLock<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.#begin(fn, true)
  }

  async tryLead(): Promise<boolean> {
    if (this.dialect === 'sqlite') return true
    if (this.#closed) return false
    try {
      if (this.#leader && this.#leading) {
        // Still ours only while the connection lives: a cheap round trip finds a dead one.
        await this.#leader.query('select 1')
        return true
      }
      let client = this.#leader
      if (!client) {
        client = this.#opened.newClient!()
        // A dropped connection loses the session lock with it: stop leading, reconnect next time.
        const c = client
        c.on('error', (err) => {
          this.#log.warn({ err: { message: err.message } }, 'leader connection lost')
          this.#dropLeader(c)
        })
        c.on('end', () => this.#dropLeader(c))
        this.#leader = c
        await c.connect()
      }
      const r = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1::bigint) as ok', [this.#leaderKey])
      this.#leading = r.rows[0]?.ok === true
      return this.#leading
    } catch (err) {
      this.#log.warn({ err: { message: (err as Error).message } }, 'leader election query failed')
      if (this.#leader) this.#dropLeader(this.#leader)
      return false
    }
  }

  #dropLeader(client: pg.Client): void {
    if (this.#leader !== client) return
    this.#leader = undefined
    this.#leading = false
    client.end().catch(() => {})
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const leader = this.#leader
    this.#leader = undefined
    this.#leading = false
    if (leader) {
      leader.removeAllListeners('end')
      await leader.end().catch(() => {})
    }
    await this.#db.destroy()
  }
}

/** Store.assignWarm on Postgres: $1 template, $2 user, $3 key name, $4 now, $5 audit detail. */
const ASSIGN_WARM_PG = `
  with live as (
    select * from instances where owner_id = $2::text and template = $1::text and state in (${LIVE_SQL})
  ), cand as (
    select id from instances
    where template = $1::text and state = 'ready' and owner_id is null and not exists (select 1 from live)
    order by created_at, id limit 1
    for update skip locked
  ), claimed as (
    update instances i
    set owner_id = $2::text, key_name = $3::text, assigned_at = $4::bigint, last_activity_at = $4::bigint, updated_at = $4::bigint
    from cand where i.id = cand.id and i.state = 'ready' and i.owner_id is null
    returning i.*
  ), opened as (
    insert into assignments (instance_id, template, user_id, key_name, started_at)
    select id, template, $2::text, $3::text, $4::bigint from claimed
  ), audited as (
    insert into audit_log (at, instance_id, event, actor, detail)
    select $4::bigint, id, 'assigned', $3::text, $5::text from claimed
  )
  select 'existing' as outcome, live.* from live
  union all
  select 'assigned' as outcome, claimed.* from claimed`

type WarmBatch = BetterSqlite3.Transaction<(claims: readonly WarmClaimInput[], now: number) => WarmClaimResult[]>

/** The audit detail of a warm assignment (both dialects). */
const warmAuditDetail = (userId: string) => JSON.stringify({ userId, warm: true })

/** SQLite's warm-hit transaction, prepared once (see SqlStore.assignWarm); the same rows as findLive, openAssignment and audit write. */
function prepareWarmBatch(db: BetterSqlite3.Database): WarmBatch {
  const live = db.prepare<[string, string], InstancesTable>(
    `select * from instances where owner_id = ? and template = ? and state in (${LIVE_SQL}) limit 1`,
  )
  const cand = db.prepare<[string], { id: string }>(
    `select id from instances where template = ? and state = 'ready' and owner_id is null order by created_at, id limit 1`,
  )
  const claim = db.prepare<[string, string | null, number, number, number, string], InstancesTable>(
    `update instances set owner_id = ?, key_name = ?, assigned_at = ?, last_activity_at = ?, updated_at = ? where id = ? and state = 'ready' and owner_id is null returning *`,
  )
  const open = db.prepare<[string, string, string, string | null, number]>(
    `insert into assignments (instance_id, template, user_id, key_name, started_at) values (?, ?, ?, ?, ?)`,
  )
  const audit = db.prepare<[number, string, string | null, string]>(
    `insert into audit_log (at, instance_id, event, actor, detail) values (?, ?, 'assigned', ?, ?)`,
  )
  return db.transaction((claims: readonly WarmClaimInput[], now: number): WarmClaimResult[] => {
    const exhausted = new Set<string>()
    return claims.map((c): WarmClaimResult => {
      const existing = live.get(c.userId, c.template)
      if (existing) return { existing: toInstance(existing) }
      if (exhausted.has(c.template)) return {}
      const id = cand.get(c.template)?.id
      // One writer on this connection, so the candidate cannot be taken between the two statements.
      const row = id === undefined ? undefined : claim.get(c.userId, c.keyName, now, now, now, id)
      if (!row) {
        exhausted.add(c.template)
        return {}
      }
      open.run(row.id, row.template, c.userId, c.keyName, now)
      audit.run(now, row.id, c.keyName, warmAuditDetail(c.userId))
      return { assigned: toInstance(row) }
    })
  })
}
