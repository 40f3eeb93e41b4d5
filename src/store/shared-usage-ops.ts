import { sql, type Kysely } from 'kysely'
import type { SharedUse } from '../domain/cost-segment.js'
import type { Database } from './tables.js'

/** Users' shares of shared instances (store.ts `Store.sharedUsage`), the same Kysely code on both dialects. */
export interface SharedUsageStore {
  /**
   * Adds each row's `weight` and `ms` to the stored row of its (instance, bucket, user), creating it when absent
   * (its template and groups are the first writer's). One statement per chunk; concurrent writers
   * (replicas) add up, nothing is lost or counted twice.
   */
  add(rows: readonly SharedUse[]): Promise<void>
  /** Rows whose bucket starts in [from, to) (any bucket when absent), oldest bucket first. */
  list(filter: { from?: number; to?: number; instanceId?: string }): Promise<SharedUse[]>
}

/** Rows per INSERT (7 parameters each: well under SQLite's bound-parameter limit). */
const CHUNK = 120

function groupsOf(json: string): string[] {
  try {
    const g: unknown = JSON.parse(json)
    return Array.isArray(g) ? g.filter((x): x is string => typeof x === 'string') : []
  } catch {
    return []
  }
}

export function sharedUsageStore(db: () => Kysely<Database>): SharedUsageStore {
  return {
    async add(rows) {
      for (let i = 0; i < rows.length; i += CHUNK)
        await db()
          .insertInto('shared_usage')
          .values(
            rows.slice(i, i + CHUNK).map((r) => ({
              instance_id: r.instanceId,
              bucket: r.bucket,
              user_id: r.userId,
              template: r.template,
              groups: JSON.stringify(r.groups),
              weight: r.weight,
              ms: r.ms,
            })),
          )
          .onConflict((oc) =>
            oc.columns(['instance_id', 'bucket', 'user_id']).doUpdateSet({
              weight: sql`shared_usage.weight + excluded.weight`,
              ms: sql`shared_usage.ms + excluded.ms`,
            }),
          )
          .execute()
    },
    async list(f) {
      let q = db().selectFrom('shared_usage').selectAll()
      if (f.from !== undefined) q = q.where('bucket', '>=', f.from)
      if (f.to !== undefined) q = q.where('bucket', '<', f.to)
      if (f.instanceId !== undefined) q = q.where('instance_id', '=', f.instanceId)
      const rows = await q.orderBy('bucket').orderBy('instance_id').orderBy('user_id').execute()
      return rows.map((r) => ({
        instanceId: r.instance_id,
        template: r.template,
        bucket: Number(r.bucket),
        userId: r.user_id,
        groups: groupsOf(r.groups),
        weight: Number(r.weight),
        ms: Number(r.ms),
      }))
    },
  }
}
