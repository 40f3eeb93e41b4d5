/**
 * SQLite's warm hit: prepared statements run as one synchronous transaction, and the group commit
 * that lets the claims of one event-loop turn share it.
 */
import type BetterSqlite3 from 'better-sqlite3'
import { LIVE_SQL, toInstance, warmAuditDetail } from '../rows.js'
import type { WarmClaimInput, WarmClaimResult } from '../store.js'
import type { InstancesTable } from '../tables.js'

/** One claim and the time it was made. */
export interface TimedClaim {
  readonly claim: WarmClaimInput
  readonly now: number
}

export type WarmBatch = BetterSqlite3.Transaction<(claims: readonly TimedClaim[]) => WarmClaimResult[]>

/** SQLite's warm-hit transaction, prepared once; the same rows as findLive, openAssignment and audit write. */
export function prepareWarmBatch(db: BetterSqlite3.Database): WarmBatch {
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
  return db.transaction((claims: readonly TimedClaim[]): WarmClaimResult[] => {
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

interface Job extends TimedClaim {
  readonly resolve: (r: WarmClaimResult) => void
  readonly reject: (err: unknown) => void
}

/**
 * Group commit: warm claims that arrive in the same turn of the event loop share one transaction.
 * Writes serialize on SQLite's one connection anyway, and under load the commit, not the claim, is
 * most of a warm hit's cost. Each claim still checks for the user's live instance first, inside the
 * transaction, so a user's two requests in one batch get one instance. If the batch fails, each claim
 * runs again on its own and gets its own error.
 */
export class WarmClaimBatcher {
  readonly #run: (claims: readonly TimedClaim[]) => Promise<WarmClaimResult[]>
  #jobs: Job[] = []

  constructor(run: (claims: readonly TimedClaim[]) => Promise<WarmClaimResult[]>) {
    this.#run = run
  }

  claim(claim: WarmClaimInput, now: number): Promise<WarmClaimResult> {
    return new Promise((resolve, reject) => {
      this.#jobs.push({ claim, now, resolve, reject })
      if (this.#jobs.length === 1) setImmediate(() => void this.#flush())
    })
  }

  async #flush(): Promise<void> {
    const batch = this.#jobs
    this.#jobs = []
    try {
      const results = await this.#run(batch)
      batch.forEach((job, i) => job.resolve(results[i]!))
    } catch (err) {
      if (batch.length === 1) return batch[0]!.reject(err)
      for (const job of batch) {
        try {
          job.resolve((await this.#run([job]))[0]!)
        } catch (e) {
          job.reject(e)
        }
      }
    }
  }
}
