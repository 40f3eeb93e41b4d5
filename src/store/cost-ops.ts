/** The store's cost-segment operations (docs/cost.md "Cost accrual"), the same Kysely code on both dialects. */
import type { Selectable } from 'kysely'
import type { CostSegment, Market, NewSegment, SegmentKind } from '../domain/cost-segment.js'
import type { CostSegmentFilter, CostWrite } from './store.js'
import type { CostSegmentsTable } from './tables.js'
import type { Db } from './rows.js'

/** Rows per INSERT (well under SQLite's bound-parameter limit). */
const CHUNK = 200

function toSegment(r: Selectable<CostSegmentsTable>): CostSegment {
  let groups: string[] = []
  try {
    const g: unknown = JSON.parse(r.groups)
    if (Array.isArray(g)) groups = g.filter((x): x is string => typeof x === 'string')
  } catch {}
  return {
    id: Number(r.id),
    instanceId: r.instance_id,
    template: r.template,
    kind: r.kind as SegmentKind,
    userId: r.user_id,
    keyName: r.key_name,
    groups,
    market: r.market as Market,
    ratePerHour: Number(r.rate_per_hour),
    currency: r.currency,
    startedAt: Number(r.started_at),
    endedAt: r.ended_at === null ? null : Number(r.ended_at),
  }
}

const toRow = (s: NewSegment) => ({
  instance_id: s.instanceId,
  template: s.template,
  kind: s.kind,
  user_id: s.userId,
  key_name: s.keyName,
  groups: JSON.stringify(s.groups),
  market: s.market,
  rate_per_hour: s.ratePerHour,
  currency: s.currency,
  started_at: s.startedAt,
  ended_at: s.endedAt,
})

export async function listCostSegments(db: Db, f: CostSegmentFilter): Promise<CostSegment[]> {
  let q = db.selectFrom('cost_segments').selectAll()
  if (f.instanceId !== undefined) q = q.where('instance_id', '=', f.instanceId)
  if (f.instanceIds !== undefined) {
    if (!f.instanceIds.length) return []
    q = q.where('instance_id', 'in', f.instanceIds)
  }
  if (f.open === true) q = q.where('ended_at', 'is', null)
  // Overlap of [started_at, ended_at ?? ∞) with [from, to).
  if (f.to !== undefined) q = q.where('started_at', '<', f.to)
  if (f.from !== undefined) {
    const from = f.from
    q = q.where((eb) => eb.or([eb('ended_at', 'is', null), eb('ended_at', '>', from)]))
  }
  return (await q.orderBy('started_at').orderBy('id').execute()).map(toSegment)
}

/** The end of the instance's last closed segment (null: none). */
export async function lastCostEnd(db: Db, instanceId: string): Promise<number | null> {
  const r = await db
    .selectFrom('cost_segments')
    .select((eb) => eb.fn.max('ended_at').as('end'))
    .where('instance_id', '=', instanceId)
    .executeTakeFirst()
  return r?.end === null || r?.end === undefined ? null : Number(r.end)
}

/** lastCostEnd of many instances, one statement (grouped by instance): only ids with a closed segment. */
export async function lastCostEnds(db: Db, instanceIds: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  if (!instanceIds.length) return out
  const rows = await db
    .selectFrom('cost_segments')
    .select((eb) => ['instance_id', eb.fn.max('ended_at').as('end')])
    .where('instance_id', 'in', instanceIds)
    .groupBy('instance_id')
    .execute()
  for (const r of rows) if (r.end !== null && r.end !== undefined) out.set(r.instance_id, Number(r.end))
  return out
}

/**
 * Applies one instance's accrual plan: the open segment closed (compare-and-set on its still
 * being open) or dropped, then the new segments. False, with nothing else done, when the open
 * segment was no longer open (another writer got there first); the caller runs inside a transaction.
 */
export async function writeCost(db: Db, w: CostWrite): Promise<boolean> {
  if (w.close) {
    const r = await db
      .updateTable('cost_segments')
      .set({ ended_at: w.close.endedAt })
      .where('id', '=', w.close.id)
      .where('ended_at', 'is', null)
      .executeTakeFirst()
    if (Number(r.numUpdatedRows) !== 1) return false
  }
  if (w.drop) {
    const r = await db
      .deleteFrom('cost_segments')
      .where('id', '=', w.drop.id)
      .where('ended_at', 'is', null)
      .executeTakeFirst()
    if (Number(r.numDeletedRows) !== 1) return false
  }
  for (let i = 0; i < w.insert.length; i += CHUNK)
    await db
      .insertInto('cost_segments')
      .values(w.insert.slice(i, i + CHUNK).map(toRow))
      .execute()
  return true
}

/** Store.purgeCost: old closed segments and shared-usage rows of instances whose rows are gone. */
export async function purgeCost(db: Db, before: number): Promise<{ segments: number; shared: number }> {
  const present = db.selectFrom('instances').select('id')
  const seg = await db
    .deleteFrom('cost_segments')
    .where('ended_at', 'is not', null)
    .where('ended_at', '<', before)
    .where('instance_id', 'not in', present)
    .executeTakeFirst()
  const shared = await db
    .deleteFrom('shared_usage')
    .where('bucket', '<', before)
    .where('instance_id', 'not in', present)
    .executeTakeFirst()
  return { segments: Number(seg.numDeletedRows), shared: Number(shared.numDeletedRows) }
}
