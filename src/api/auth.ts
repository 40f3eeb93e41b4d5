import type { FastifyRequest } from 'fastify'
import { AppError } from '../domain/errors.js'
import type { Principal } from '../domain/keys.js'
import type { ApiDeps } from './context.js'

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal
  }
}

/** An `onRequest` hook that sets `req.principal` or throws (401, 429). */
export type Authenticate = (req: FastifyRequest) => Promise<void>

/** Authenticates API keys (or auth: none), then applies the per-requester-key rate limit. */
export function authenticator(deps: ApiDeps): Authenticate {
  const limiter = deps.config.auth.rateLimit > 0 ? new RateLimiter(deps.config.auth.rateLimit) : undefined
  return async (req) => {
    if (deps.config.auth.mode === 'none') {
      req.principal = { kind: 'system' }
      return
    }
    const p = await deps.keyring.authenticate(req.headers)
    req.principal = p
    if (limiter && p.kind === 'key' && p.role === 'requester') {
      const wait = limiter.take(p.name)
      if (wait > 0)
        throw new AppError('RATE_LIMITED', `too many requests for key "${p.name}"`, {
          retryAfter: Math.ceil(wait / 1000),
        })
    }
  }
}

/** Token buckets per key name: `rate` tokens a second, bursts up to twice that. */
class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>()
  constructor(readonly rate: number) {}
  /** 0 when allowed; else milliseconds until a token is available. */
  take(name: string, now = Date.now()): number {
    const cap = this.rate * 2
    const b = this.#buckets.get(name) ?? { tokens: cap, at: now }
    b.tokens = Math.min(cap, b.tokens + ((now - b.at) / 1000) * this.rate)
    b.at = now
    this.#buckets.set(name, b)
    if (b.tokens >= 1) {
      b.tokens -= 1
      return 0
    }
    return ((1 - b.tokens) / this.rate) * 1000
  }
}
