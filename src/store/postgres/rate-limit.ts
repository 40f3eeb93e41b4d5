import { sql, type Kysely } from 'kysely'
import { decide, type RateDecision } from '../../domain/rate-limit.js'
import type { Database } from '../tables.js'

/**
 * One bucket per key in `rate_limits`, refilled and drawn from in one statement (an upsert: the row
 * lock serialises replicas drawing from the same bucket). `allowed` is written with the level so the
 * answer is read back from the same row.
 */
export async function takePgRateToken(
  db: Kysely<Database>,
  key: string,
  rate: number,
  burst: number,
  now: number,
): Promise<RateDecision> {
  const level = sql<number>`least(${burst}::double precision, r.tokens + greatest(0, ${now}::bigint - r.at) * ${rate}::double precision / 1000)`
  const r = await sql<{ tokens: number; allowed: boolean }>`
    insert into rate_limits as r (key, tokens, at, allowed)
    values (${key}, ${burst - 1}::double precision, ${now}::bigint, true)
    on conflict (key) do update set
      tokens = case when ${level} >= 1 then ${level} - 1 else ${level} end,
      at = greatest(r.at, ${now}::bigint),
      allowed = ${level} >= 1
    returning tokens, allowed`.execute(db)
  const row = r.rows[0]!
  const tokens = Number(row.tokens)
  // Reconstruct the level before the request from the stored one, for the shared arithmetic.
  return decide(row.allowed ? tokens + 1 : tokens, rate, burst, now).decision
}
