/**
 * The history's and the audit log's reads, the same Kysely code on both dialects: filtered lists
 * newest first with keyset paging (the REST API's cursors, src/api/paging.ts), and counts of the
 * same filters (the pages' `total`).
 */
import { sql, type SelectQueryBuilder } from 'kysely'
import type { Assignment, AuditEvent } from '../domain/instance.js'
import type { AuditFilter, HistoryFilter } from './store.js'
import type { Database } from './tables.js'
import { toAssignment, toAudit, type Db } from './rows.js'

type AssignmentsQuery<O> = SelectQueryBuilder<Database, 'assignments', O>

function historyWhere<O>(q: AssignmentsQuery<O>, filter: HistoryFilter): AssignmentsQuery<O> {
  if (filter.userId !== undefined) q = q.where('user_id', '=', filter.userId)
  if (filter.template !== undefined) q = q.where('template', '=', filter.template)
  if (filter.instanceId !== undefined) q = q.where('instance_id', '=', filter.instanceId)
  if (filter.instanceIds !== undefined)
    q = filter.instanceIds.length ? q.where('instance_id', 'in', filter.instanceIds) : q.where(sql<boolean>`1 = 0`)
  if (filter.keyName !== undefined) q = q.where('key_name', '=', filter.keyName)
  // Overlap of [started_at, ended_at ?? ∞) with [from, to).
  if (filter.to !== undefined) q = q.where('started_at', '<', filter.to)
  if (filter.from !== undefined) {
    const from = filter.from
    q = q.where((eb) => eb.or([eb('ended_at', 'is', null), eb('ended_at', '>', from)]))
  }
  if (filter.endReason !== undefined) q = q.where('end_reason', '=', filter.endReason)
  if (filter.open === true) q = q.where('ended_at', 'is', null)
  if (filter.open === false) q = q.where('ended_at', 'is not', null)
  return q
}

/** Newest first: (started_at, id) descending; `before` continues after that key (keyset paging). */
export async function listHistory(db: Db, filter: HistoryFilter): Promise<Assignment[]> {
  let q = historyWhere(db.selectFrom('assignments').selectAll(), filter)
  const before = filter.before
  if (before !== undefined)
    q = q.where((eb) =>
      eb.or([
        eb('started_at', '<', before.startedAt),
        eb.and([eb('started_at', '=', before.startedAt), eb('id', '<', before.id)]),
      ]),
    )
  q = q.orderBy('started_at', 'desc').orderBy('id', 'desc')
  if (filter.limit !== undefined) q = q.limit(filter.limit)
  if (filter.offset !== undefined) {
    // SQLite needs a LIMIT before OFFSET.
    if (filter.limit === undefined) q = q.limit(Number.MAX_SAFE_INTEGER)
    q = q.offset(filter.offset)
  }
  return (await q.execute()).map(toAssignment)
}

/** How many assignments match the filter (`before`, `limit` and `offset` ignored). */
export async function countHistory(db: Db, filter: HistoryFilter): Promise<number> {
  const row = await historyWhere(
    db.selectFrom('assignments').select((eb) => eb.fn.countAll<number>().as('n')),
    filter,
  ).executeTakeFirstOrThrow()
  return Number(row.n)
}

/** Newest first (id descending); `beforeId` continues after that row (keyset paging). */
export async function listAudit(db: Db, filter: AuditFilter): Promise<AuditEvent[]> {
  let q = db.selectFrom('audit_log').selectAll()
  if (filter.instanceId !== undefined) q = q.where('instance_id', '=', filter.instanceId)
  if (filter.beforeId !== undefined) q = q.where('id', '<', filter.beforeId)
  q = q.orderBy('id', 'desc').limit(filter.limit ?? 1000)
  return (await q.execute()).map(toAudit)
}

/** How many audit rows match (`beforeId` and `limit` ignored). */
export async function countAudit(db: Db, filter: AuditFilter): Promise<number> {
  let q = db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n'))
  if (filter.instanceId !== undefined) q = q.where('instance_id', '=', filter.instanceId)
  return Number((await q.executeTakeFirstOrThrow()).n)
}
