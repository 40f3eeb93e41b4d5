/** SQLite's warm hit: prepared statements run as one synchronous transaction. */
import type BetterSqlite3 from 'better-sqlite3'
import { plainParams } from './plain-params.js'
import { LIVE_SQL, toInstance, warmAuditDetail } from '../rows.js'
import type { WarmClaimResult } from '../store.js'
import type { TimedClaim } from '../warm-batcher.js'
import type { InstancesTable } from '../tables.js'

export type WarmBatch = BetterSqlite3.Transaction<(claims: readonly TimedClaim[]) => WarmClaimResult[]>

/**
 * SQLite's warm-hit transaction, prepared once; the same rows as findLive, openAssignment and audit
 * write. Parameters bound as plain values (plain-params.ts: `template = ?` was compiled anew on every run).
 */
export function prepareWarmBatch(raw: BetterSqlite3.Database): WarmBatch {
  const db = {
    prepare: <P extends unknown[], R = unknown>(sql: string) => raw.prepare<P, R>(plainParams(sql)),
  }
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
  return raw.transaction((claims: readonly TimedClaim[]): WarmClaimResult[] => {
    const exhausted = new Set<string>()
    return claims.map(({ claim: c, now }): WarmClaimResult => {
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
