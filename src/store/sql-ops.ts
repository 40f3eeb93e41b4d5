/** The store's operations: the same dialect-neutral Kysely code on the pool and inside a transaction. */
import type { ExpressionBuilder, SelectQueryBuilder } from 'kysely'
import type { Assignment, AuditEvent, EndReason, Instance, InstanceState } from '../domain/instance.js'
import type { ApiKey } from '../domain/keys.js'
import type { CostSegment } from '../domain/cost-segment.js'
import { lastCostEnd, lastCostEnds, listCostSegments, purgeCost, writeCost } from './cost-ops.js'
import { countAudit, countHistory, listAudit, listHistory } from './history-ops.js'
import { listStateSamples, purgeStateSamples, recordStateSamples } from './sample-ops.js'
import { ConflictError } from '../domain/errors.js'
import { INSTANCE_STATES } from '../domain/instance.js'
import type {
  AuditFilter,
  CostSegmentFilter,
  CostWrite,
  HistoryFilter,
  InstanceFilter,
  InstancePatch,
  NewInstance,
  QueueKey,
  StateSample,
  StoreOps,
  UpdateCondition,
} from './store.js'
import type { StoreAdapter } from './adapter.js'
import type { Database, InstancesTable } from './tables.js'
import { uniqueViolation } from './dialects.js'
import { currentEpoch, epochHolds, fenceCheck } from './fence.js'
import { ACTIVE, LIVE, patchToRow, toAssignment, toInstance, toKey, translateInstanceError, type Db } from './rows.js'

/** How often consumeNonce purges expired nonces, ms. */
const NONCE_PURGE_EVERY_MS = 60_000
/** Rows per INSERT for bulk inserts, ids per getInstances (well under SQLite's 32,766 bound parameters). */
const INSERT_CHUNK = 500

export interface Shared {
  readonly adapter: StoreAdapter
  /** Shared by the store and its transactions. */
  readonly nonces: { lastPurge: number }
  /** Runs fn in a transaction (a fresh one, or the current one when already inside). */
  readonly inTransaction: <T>(fn: (db: Db) => Promise<T>) => Promise<T>
  /** config.pool.id: the row of leader_epochs that fences the worker's writes. */
  readonly poolId: string
}

export class SqlOps implements StoreOps {
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

  async getInstances(ids: readonly string[]): Promise<Instance[]> {
    const out: Instance[] = []
    for (let i = 0; i < ids.length; i += INSERT_CHUNK) {
      const rows = await this.#db
        .selectFrom('instances')
        .selectAll()
        .where('id', 'in', ids.slice(i, i + INSERT_CHUNK))
        .execute()
      out.push(...rows.map(toInstance))
    }
    return out
  }

  #filtered<Q extends SelectQueryBuilder<Database, 'instances', any>>(q: Q, filter: InstanceFilter): Q {
    if (filter.template !== undefined) q = q.where('template', '=', filter.template) as Q
    if (filter.states !== undefined) q = q.where('state', 'in', [...filter.states]) as Q
    if (filter.ownerId !== undefined) q = q.where('owner_id', '=', filter.ownerId) as Q
    if (filter.assigned === true) q = q.where('owner_id', 'is not', null) as Q
    if (filter.assigned === false) q = q.where('owner_id', 'is', null) as Q
    if (filter.endedSince !== undefined) q = q.where('ended_at', '>=', filter.endedSince) as Q
    return q
  }

  async listInstances(filter: InstanceFilter = {}): Promise<Instance[]> {
    if (filter.states !== undefined && filter.states.length === 0) return []
    let q = this.#filtered(this.#db.selectFrom('instances').selectAll(), filter).orderBy('created_at').orderBy('id')
    if (filter.limit !== undefined) q = q.limit(filter.limit)
    return (await q.execute()).map(toInstance)
  }

  async listInstancesPage(filter: InstanceFilter, afterId: string | null, limit: number): Promise<Instance[]> {
    const { states, ...rest } = filter
    if (states !== undefined && states.length === 0) return []
    let q = this.#filtered(this.#db.selectFrom('instances').selectAll(), rest)
    // The states as `NOT IN` their complement: `state IN (…)` makes both planners read every
    // matching row through the state index and sort them for each page; this way they walk the
    // primary key from `afterId` and stop after `limit` rows (SQLite: SEARCH … USING INDEX
    // sqlite_autoindex_instances_1 (id>?), no temp b-tree).
    const others = states === undefined ? [] : INSTANCE_STATES.filter((st) => !states.includes(st))
    if (others.length) q = q.where('state', 'not in', others)
    if (afterId !== null) q = q.where('id', '>', afterId)
    return (await q.orderBy('id').limit(limit).execute()).map(toInstance)
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
    const epoch = currentEpoch()
    if (epoch !== undefined) {
      // Inside a transaction (top-ups run under the pool lock) the share lock holds until commit,
      // so a take-over waits for this insert or this insert sees the take-over.
      await this.#fenceCheck(epoch)
      values.leader_epoch = epoch
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
    const epoch = currentEpoch()
    if (epoch !== undefined) set.leader_epoch = epoch
    let q = this.#db.updateTable('instances').set(set).where('id', '=', id)
    // Fenced in the statement itself: the row of a newer epoch (committed, or committing) refuses it.
    if (epoch !== undefined) q = q.where(this.#epochHolds(epoch))
    if (cond.states !== undefined) {
      if (cond.states.length === 0) return undefined
      q = q.where('state', 'in', [...cond.states])
    }
    if (cond.generation !== undefined) q = q.where('generation', '=', cond.generation)
    if (cond.ownerId === null) q = q.where('owner_id', 'is', null)
    else if (cond.ownerId !== undefined) q = q.where('owner_id', '=', cond.ownerId)
    let r: InstancesTable | undefined
    try {
      r = await q.returningAll().executeTakeFirst()
    } catch (err) {
      translateInstanceError(err)
    }
    if (!r && epoch !== undefined) await this.#fenceCheck(epoch) // a lost compare-and-set, or a stale leader
    return r ? toInstance(r) : undefined
  }

  #epochHolds(epoch: number) {
    return epochHolds(this.#shared.poolId, epoch, this.#shared.adapter.shareLock)
  }

  #fenceCheck(epoch: number): Promise<void> {
    return fenceCheck(this.#db, this.#shared.poolId, epoch, this.#shared.adapter.shareLock)
  }

  async deleteInstance(id: string): Promise<void> {
    const epoch = currentEpoch()
    if (epoch !== undefined) await this.#fenceCheck(epoch)
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
      .where((eb) => queueOrder(eb, '<', { createdAt: me.created_at, id: me.id }))
      .executeTakeFirstOrThrow()
    return Number(r.n) + 1
  }

  async listQueued(template?: string, limit?: number, after?: QueueKey): Promise<Instance[]> {
    let q = this.#db.selectFrom('instances').selectAll().where('state', '=', 'queued')
    if (template !== undefined) q = q.where('template', '=', template)
    if (after !== undefined) q = q.where((eb) => queueOrder(eb, '>', after))
    q = q.orderBy('created_at').orderBy('id')
    if (limit !== undefined) q = q.limit(limit)
    return (await q.execute()).map(toInstance)
  }

  async recordActivity(entries: readonly { readonly id: string; readonly at: number }[]): Promise<void> {
    if (entries.length === 0) return
    const latest = new Map<string, number>()
    for (const e of entries) latest.set(e.id, Math.max(latest.get(e.id) ?? -Infinity, e.at))
    await this.#shared.adapter.recordActivity(this.#db, latest, this.#shared.inTransaction)
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

  listHistory(filter: HistoryFilter = {}): Promise<Assignment[]> {
    return listHistory(this.#db, filter)
  }

  countHistory(filter: HistoryFilter = {}): Promise<number> {
    return countHistory(this.#db, filter)
  }

  listCostSegments(filter: CostSegmentFilter = {}): Promise<CostSegment[]> {
    return listCostSegments(this.#db, filter)
  }

  lastCostEnd(instanceId: string): Promise<number | null> {
    return lastCostEnd(this.#db, instanceId)
  }

  lastCostEnds(instanceIds: readonly string[]): Promise<Map<string, number>> {
    return lastCostEnds(this.#db, instanceIds)
  }

  purgeCost(before: number): Promise<{ segments: number; shared: number }> {
    return purgeCost(this.#db, before)
  }

  writeCost(w: CostWrite): Promise<boolean> {
    return writeCost(this.#db, w)
  }

  async audit(e: Omit<AuditEvent, 'id'> | readonly Omit<AuditEvent, 'id'>[]): Promise<void> {
    const rows = (Array.isArray(e) ? e : [e]) as readonly Omit<AuditEvent, 'id'>[]
    if (!rows.length) return
    await this.#db.insertInto('audit_log').values(rows.map(auditRow)).execute()
  }

  listAudit(filter: AuditFilter = {}): Promise<AuditEvent[]> {
    return listAudit(this.#db, filter)
  }

  countAudit(filter: AuditFilter = {}): Promise<number> {
    return countAudit(this.#db, filter)
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

  recordStateSamples(samples: readonly StateSample[]): Promise<void> {
    return recordStateSamples(this.#db, samples)
  }

  listStateSamples(from: number, to: number): Promise<StateSample[]> {
    return listStateSamples(this.#db, from, to)
  }

  purgeStateSamples(before: number): Promise<number> {
    return purgeStateSamples(this.#db, before)
  }
}

/** Rows before (`<`) or after (`>`) `key` in the queue's order, (created_at, id). */
function queueOrder(eb: ExpressionBuilder<Database, 'instances'>, op: '<' | '>', key: QueueKey) {
  return eb.or([
    eb('created_at', op, key.createdAt),
    eb.and([eb('created_at', '=', key.createdAt), eb('id', op, key.id)]),
  ])
}

function auditRow(r: Omit<AuditEvent, 'id'>) {
  return { at: r.at, instance_id: r.instanceId, event: r.event, actor: r.actor, detail: JSON.stringify(r.detail ?? {}) }
}
