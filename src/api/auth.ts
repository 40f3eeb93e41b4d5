import type { FastifyReply, FastifyRequest } from 'fastify'
import { AppError } from '../domain/errors.js'
import type { Principal } from '../domain/keys.js'
import type { ApiDeps } from './context.js'

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal
  }
}

/** An `onRequest` hook that sets `req.principal` or throws (401, 403, 429). */
export type Authenticate = (req: FastifyRequest, reply?: FastifyReply) => Promise<void>

/**
 * Authenticates API keys (or auth: none), then applies the per-requester-key rate limit: a token
 * bucket in the store (`auth.rateLimit` a second, bursts of twice that), so N replicas on one
 * Postgres allow the rate once, not N times. Answers carry `RateLimit-Limit`, `RateLimit-Remaining`
 * and `RateLimit-Reset` (IETF httpapi draft); a 429 also carries `Retry-After`.
 */
export function authenticator(deps: ApiDeps): Authenticate {
  const rate = deps.config.auth.rateLimit
  const burst = rate * 2
  return async (req, reply) => {
    if (deps.config.auth.mode === 'none') {
      req.principal = { kind: 'system' }
      return
    }
    const p = await deps.keyring.authenticate(req.headers)
    req.principal = p
    // A scraper's key opens /metrics and nothing else, whatever a route's own checks would allow.
    if (p.kind === 'key' && p.role === 'metrics' && req.routeOptions.url !== '/metrics')
      throw new AppError('FORBIDDEN', 'a metrics key may only read /metrics')
    if (rate > 0 && p.kind === 'key' && p.role === 'requester') {
      const d = await deps.store.takeRateToken(`key:${p.name}`, rate, burst, Date.now())
      reply?.headers({
        'ratelimit-limit': burst,
        'ratelimit-remaining': d.remaining,
        'ratelimit-reset': Math.ceil(d.resetMs / 1000),
        'ratelimit-policy': `${burst};w=${Math.ceil(burst / rate)}`,
      })
      if (!d.allowed)
        throw new AppError('RATE_LIMITED', `too many requests for key "${p.name}"`, {
          retryAfter: Math.max(1, Math.ceil(d.retryAfterMs / 1000)),
        })
    }
  }
}
