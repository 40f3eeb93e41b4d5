/**
 * Postgres's warm hit: a batch of claims in one statement, so one round trip, one commit and no
 * explicit transaction, however many claims the batch holds (warm-batcher.ts gathers them).
 */
import type pg from 'pg'
import { LIVE_SQL, toInstance, warmAuditDetail } from '../rows.js'
import type { WarmClaimResult } from '../store.js'
import type { InstancesTable } from '../tables.js'
import type { TimedClaim } from '../warm-batcher.js'

/**
 * $1 templates, $2 users, $3 key names, $4 times, $5 audit details: one element per claim, each
 * (user, template) at most once. For each claim: the user's live instance of the template if there
 * is one; else the template's free `ready` rows, oldest first, go to its claims in order (FOR UPDATE
 * SKIP LOCKED, so concurrent batches take different rows). The claims, their assignments and their
 * audit rows commit together or not at all. Every branch reads an index: instances_live_owner_uq
 * for the live check, instances_free_idx for the free rows, the primary key for the update.
 *
 * The plan must not depend on fresh statistics (a table just filled, as at start or in bench:api,
 * has none): estimated at one row, the CTEs invited a hash join over every live row for the live
 * check (7,750 rows per batch) and a nested loop of the free index against the pairs for the update
 * (56,000 rows compared per batch of 45: 18–70 ms). The live check is a LATERAL lookup (`limit 1`
 * keeps it from being flattened back into a join), and the update matches on the primary key
 * alone: the rows were locked by `cand` in this statement, whose FOR UPDATE re-checked `ready` and
 * unowned on their newest version, so no one can have changed them since; a second test of the
 * state there was what let the planner pick the free index. 4 ms per batch of 45 now.
 */
const CLAIM_WARM_PG = `
  with req as (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
      with ordinality as r(template, user_id, key_name, at, detail, ord)
  ), live as (
    select r.ord, i.* from req r cross join lateral (
      select * from instances
      where owner_id = r.user_id and template = r.template and state in (${LIVE_SQL})
      limit 1
    ) i
  ), want as (
    select r.*, row_number() over (partition by r.template order by r.ord) as n
    from req r where not exists (select 1 from live l where l.ord = r.ord)
  ), per_template as (
    select template, count(*) as k from want group by template
  ), cand as (
    select c.id, t.template, row_number() over (partition by t.template order by c.created_at, c.id) as n
    from per_template t cross join lateral (
      select id, created_at from instances
      where template = t.template and state = 'ready' and owner_id is null
      order by created_at, id limit t.k
      for update skip locked
    ) c
  ), pairs as (
    select w.ord, w.user_id, w.key_name, w.at, w.detail, c.id
    from want w join cand c on c.template = w.template and c.n = w.n
  ), claimed as (
    update instances i
    set owner_id = p.user_id, key_name = p.key_name, assigned_at = p.at, last_activity_at = p.at, updated_at = p.at
    from pairs p where i.id = p.id
    returning p.ord, i.*
  ), opened as (
    insert into assignments (instance_id, template, user_id, key_name, started_at)
    select id, template, owner_id, key_name, assigned_at from claimed order by ord
  ), audited as (
    insert into audit_log (at, instance_id, event, actor, detail)
    select c.assigned_at, c.id, 'assigned', c.key_name, p.detail from claimed c join pairs p on p.ord = c.ord order by c.ord
  )
  select 'existing' as outcome, live.* from live
  union all
  select 'assigned' as outcome, claimed.* from claimed`

type Row = InstancesTable & { outcome: 'existing' | 'assigned'; ord: number }

/**
 * The warm hit for each claim, in order, each seeing the ones before it: a user's second claim of
 * the same template gets what the first got (as `existing`), without a second claim in SQL.
 */
export async function claimWarmPg(pool: pg.Pool, claims: readonly TimedClaim[]): Promise<WarmClaimResult[]> {
  const first = new Map<string, number>()
  const unique: TimedClaim[] = []
  const slot = claims.map((c) => {
    const key = JSON.stringify([c.claim.userId, c.claim.template])
    let j = first.get(key)
    if (j === undefined) {
      j = unique.push(c) - 1
      first.set(key, j)
    }
    return j
  })
  // Named: each connection parses and plans it once.
  const r = await pool.query<Row>({
    name: 'studiopool_claim_warm_batch',
    text: CLAIM_WARM_PG,
    values: [
      unique.map((c) => c.claim.template),
      unique.map((c) => c.claim.userId),
      unique.map((c) => c.claim.keyName),
      unique.map((c) => c.now),
      unique.map((c) => warmAuditDetail(c.claim.userId)),
    ],
  })
  const results: WarmClaimResult[] = unique.map(() => ({}))
  for (const row of r.rows) {
    const { outcome, ord, ...inst } = row
    const got = toInstance(inst)
    results[Number(ord) - 1] = outcome === 'existing' ? { existing: got } : { assigned: got }
  }
  const answered = new Set<number>()
  return slot.map((j) => {
    const res = results[j]!
    if (!answered.has(j)) {
      answered.add(j)
      return res
    }
    const inst = res.assigned ?? res.existing
    return inst ? { existing: inst } : {}
  })
}
