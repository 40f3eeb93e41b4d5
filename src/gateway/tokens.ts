import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Config } from '../config/types.js'

/**
 * Launch tokens and session cookies: `v1.<kid>.<payload>.<mac>`, all base64url, where
 * `mac = HMAC-SHA256(key(kid, purpose), "v1.<kid>.<payload>")`.
 *
 * - The signing key is derived per purpose (`launch`, `session`) from the secret, so a launch
 *   token is never accepted as a cookie or the other way round.
 * - `kid` names the secret (a short hash of it). Rotation: put the new secret first and keep the
 *   old one in `previousSecrets`; cookies and links made with the old one still verify until they
 *   expire, new ones use the new secret.
 * - Every token carries an explicit expiry (`e`, epoch ms). Launch tokens carry a random nonce
 *   (`n`); redeeming one calls `NonceLedger.consumeOnce`, which makes them single-use.
 * - Verified cookies are cached for a few seconds (bounded), so the per-request cost of a hot
 *   session is one Map lookup; expiry is still checked on every hit.
 */
export interface LaunchClaims {
  readonly instanceId: string
  readonly userId: string
  readonly nonce: string
  /** Epoch ms. */
  readonly expiresAt: number
}

export interface SessionClaims {
  readonly userId: string
  readonly admin: boolean
  readonly groups: readonly string[]
  /** Epoch ms. */
  readonly expiresAt: number
}

export interface TokenService {
  issueLaunch(claims: { instanceId: string; userId: string }): string
  /** Claims when the signature and expiry are good; does not consume the nonce (the gateway does). */
  verifyLaunch(token: string): LaunchClaims | undefined
  /** The session cookie's value. */
  issueSession(claims: { userId: string; admin: boolean; groups: readonly string[] }): string
  verifySession(value: string): SessionClaims | undefined
  readonly launchTtlMs: number
  readonly cookieTtlMs: number
}

const VERSION = 'v1'
const CACHE_MS = 5_000
const CACHE_MAX = 10_000

interface Key {
  readonly kid: string
  readonly launch: Buffer
  readonly session: Buffer
}

function deriveKey(secret: string): Key {
  const kid = createHash('sha256').update('studiopool-kid\0' + secret).digest('base64url').slice(0, 8)
  return {
    kid,
    launch: createHmac('sha256', secret).update('studiopool/launch/v1').digest(),
    session: createHmac('sha256', secret).update('studiopool/session/v1').digest(),
  }
}

export function createTokenService(
  secret: string,
  opts: { launchTtlMs: number; cookieTtlMs: number; previousSecrets?: readonly string[]; now?: () => number },
): TokenService {
  if (typeof secret !== 'string' || secret.length < 16) throw new Error('gateway secret must be at least 16 characters')
  const now = opts.now ?? Date.now
  const current = deriveKey(secret)
  const keys = new Map<string, Key>([[current.kid, current]])
  for (const s of opts.previousSecrets ?? []) {
    const k = deriveKey(s)
    if (!keys.has(k.kid)) keys.set(k.kid, k)
  }
  const cache = new Map<string, { claims: SessionClaims; until: number }>()

  function sign(purpose: 'launch' | 'session', payload: object): string {
    const body = `${VERSION}.${current.kid}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`
    const mac = createHmac('sha256', current[purpose]).update(body).digest('base64url')
    return `${body}.${mac}`
  }

  function open(purpose: 'launch' | 'session', token: string): Record<string, unknown> | undefined {
    if (typeof token !== 'string' || token.length > 4096) return undefined
    const lastDot = token.lastIndexOf('.')
    if (lastDot < 0) return undefined
    const body = token.slice(0, lastDot)
    const parts = body.split('.')
    if (parts.length !== 3 || parts[0] !== VERSION) return undefined
    const key = keys.get(parts[1]!)
    if (!key) return undefined
    const given = Buffer.from(token.slice(lastDot + 1), 'base64url')
    const expected = createHmac('sha256', key[purpose]).update(body).digest()
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
    try {
      const payload: unknown = JSON.parse(Buffer.from(parts[2]!, 'base64url').toString('utf8'))
      if (typeof payload !== 'object' || payload === null) return undefined
      const p = payload as Record<string, unknown>
      if (typeof p.e !== 'number' || p.e <= now()) return undefined
      return p
    } catch {
      return undefined
    }
  }

  return {
    launchTtlMs: opts.launchTtlMs,
    cookieTtlMs: opts.cookieTtlMs,
    issueLaunch({ instanceId, userId }) {
      return sign('launch', { i: instanceId, u: userId, n: randomBytes(16).toString('base64url'), e: now() + opts.launchTtlMs })
    },
    verifyLaunch(token) {
      const p = open('launch', token)
      if (!p || typeof p.i !== 'string' || typeof p.u !== 'string' || typeof p.n !== 'string') return undefined
      return { instanceId: p.i, userId: p.u, nonce: p.n, expiresAt: p.e as number }
    },
    issueSession({ userId, admin, groups }) {
      return sign('session', { u: userId, a: admin ? 1 : 0, g: [...groups], e: now() + opts.cookieTtlMs })
    },
    verifySession(value) {
      const t = now()
      const hit = cache.get(value)
      if (hit) {
        if (hit.until > t && hit.claims.expiresAt > t) return hit.claims
        cache.delete(value)
      }
      const p = open('session', value)
      if (!p || typeof p.u !== 'string' || !Array.isArray(p.g)) return undefined
      const claims: SessionClaims = Object.freeze({
        userId: p.u,
        admin: p.a === 1,
        groups: Object.freeze(p.g.filter((g): g is string => typeof g === 'string')),
        expiresAt: p.e as number,
      })
      // Bounded: a flood of distinct valid cookies only costs us a cleared cache.
      if (cache.size >= CACHE_MAX) cache.clear()
      cache.set(value, { claims, until: t + CACHE_MS })
      return claims
    },
  }
}

type GatewayUrlConfig = Pick<Config['gateway'], 'mode' | 'sessionDomain'>

/**
 * The clean session URL (what the user sees after the launch redirect).
 * Path mode: `${publicUrl}/s/${id}/`; subdomain mode: `${proto}://${id}.${sessionDomain}${:port}/`,
 * with the scheme and port taken from publicUrl.
 */
export function sessionUrl(gw: GatewayUrlConfig, publicUrl: string, instanceId: string): string {
  if (gw.mode === 'subdomain' && gw.sessionDomain) {
    const u = new URL(publicUrl)
    return `${u.protocol}//${instanceId}.${gw.sessionDomain}${u.port ? ':' + u.port : ''}/`
  }
  return `${publicUrl.replace(/\/+$/, '')}/s/${instanceId}/`
}

/** The query parameter that carries a launch token. */
export const LAUNCH_PARAM = 'sp_token'

/**
 * The launch URL handed to the requester: the clean URL plus `?sp_token=<token>`. The gateway
 * trades the token for its cookie and redirects to the same URL without the parameter.
 */
export function launchUrl(gw: GatewayUrlConfig, publicUrl: string, instanceId: string, token: string): string {
  return `${sessionUrl(gw, publicUrl, instanceId)}?${LAUNCH_PARAM}=${encodeURIComponent(token)}`
}
