/** Postgres's warm hit: one statement, so one round trip and no explicit transaction. */
import type pg from 'pg'
import { LIVE_SQL, toInstance, warmAuditDetail } from '../rows.js'
import type { WarmClaimInput, WarmClaimResult } from '../store.js'
import type { InstancesTable } from '../tables.js'

/**
 * Store.claimWarm on Postgres: $1 template, $2 user, $3 key name, $4 now, $5 audit detail. The live
 * check, the claim (FOR UPDATE SKIP LOCKED, so concurrent claims take different rows), the
 * assignment and the audit row commit together or not at all.
 */
const CLAIM_WARM_PG = `
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

export async function claimWarmPg(pool: pg.Pool, c: WarmClaimInput, now: number): Promise<WarmClaimResult> {
  // Named: each connection parses and plans it once.
  const r = await pool.query<InstancesTable & { outcome: 'existing' | 'assigned' }>({
    name: 'studiopool_claim_warm',
    text: CLAIM_WARM_PG,
    values: [c.template, c.userId, c.keyName, now, warmAuditDetail(c.userId)],
  })
  const row = r.rows[0]
  if (!row) return {}
  return row.outcome === 'existing' ? { existing: toInstance(row) } : { assigned: toInstance(row) }
}
