/**
 * Token buckets for `auth.rateLimit`: `rate` tokens a second, bursts up to `burst`. One bucket per
 * requester key, kept by the store so that every replica draws from the same bucket (Postgres) —
 * SQLite is single-process, so its store keeps them in memory with the same arithmetic.
 */
export interface RateDecision {
  readonly allowed: boolean
  /** Whole tokens left after this request. */
  readonly remaining: number
  /** Milliseconds until the bucket is full again (RateLimit-Reset). */
  readonly resetMs: number
  /** Milliseconds until a token is available; 0 when allowed (Retry-After). */
  readonly retryAfterMs: number
}

/** The bucket after a request at `now`, from its level `tokens` at `at` (a clock that went back adds nothing). */
export function takeToken(
  bucket: { tokens: number; at: number } | undefined,
  rate: number,
  burst: number,
  now: number,
): { tokens: number; at: number; decision: RateDecision } {
  const level = bucket ? Math.min(burst, bucket.tokens + (Math.max(0, now - bucket.at) / 1000) * rate) : burst
  return decide(level, rate, burst, Math.max(now, bucket?.at ?? now))
}

/** The decision for a bucket at `level` before the request. */
export function decide(
  level: number,
  rate: number,
  burst: number,
  at: number,
): { tokens: number; at: number; decision: RateDecision } {
  const allowed = level >= 1
  const tokens = allowed ? level - 1 : level
  const decision: RateDecision = {
    allowed,
    remaining: Math.floor(tokens),
    resetMs: Math.ceil(((burst - tokens) / rate) * 1000),
    retryAfterMs: allowed ? 0 : Math.ceil(((1 - tokens) / rate) * 1000),
  }
  return { tokens, at, decision }
}
