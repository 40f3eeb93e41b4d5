import { createHash, createHmac, createSecretKey, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Config } from '../config/types.js'
import { deriveAppToken } from '../domain/app-token.js'

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
 * - One encoding (issue 8): every part is unpadded base64url in its canonical form (what
 *   `Buffer.toString('base64url')` writes for those bytes), the MAC is exactly 32 bytes, and the
 *   payload is the JSON we would write. Node's decoder ignores padding, junk and stray trailing
 *   bits, so `<mac>==`, `<mac>!!` or a re-encoded MAC would otherwise verify: they are refused.
 * - Launch tokens and cookies name the requester (the API key name) that created the session
 *   (`r` / `s`): a cookie obtained from requester K's launch link opens only sessions K created.
 *   Dashboard-login cookies carry no such scope and open all of the user's own sessions.
 */
export interface LaunchClaims {
  readonly instanceId: string
  readonly userId: string
  /** The requester (key name) that created the session; null when it has none (auth: none, system). */
  readonly requester: string | null
  readonly nonce: string
  /** Epoch ms. */
  readonly expiresAt: number
}

export interface SessionClaims {
  readonly userId: string
  readonly admin: boolean
  readonly groups: readonly string[]
  /**
   * Requesters whose sessions this cookie opens (from launch links); undefined for a dashboard
   * login, which opens every session of the user.
   */
  readonly requesters?: readonly string[]
  /** Epoch ms. */
  readonly expiresAt: number
}

/** At most this many requesters in one cookie's scope (the most recent kept). */
export const MAX_COOKIE_REQUESTERS = 16

export interface TokenService {
  issueLaunch(claims: { instanceId: string; userId: string; requester?: string | null }): string
  /** Claims when the signature and expiry are good; does not consume the nonce (the gateway does). */
  verifyLaunch(token: string): LaunchClaims | undefined
  /** The session cookie's value. */
  issueSession(claims: {
    userId: string
    admin: boolean
    groups: readonly string[]
    requesters?: readonly string[]
  }): string
  verifySession(value: string): SessionClaims | undefined
  /**
   * The one-shot form secret of the "continue as …?" page (a launch link opened in a browser holding
   * another user's cookie): bound to the launch token's nonce and to that cookie, so it is worthless
   * on another page, in another browser or after the cookie changes.
   */
  switchProof(nonce: string, cookieValue: string): string
  checkSwitchProof(nonce: string, cookieValue: string, presented: string): boolean
  /** The per-instance app token (domain/app-token.ts) under the current secret: what upstreamHeaders' `{{appToken}}` becomes. */
  appToken(instanceId: string, generation: number): string
  readonly launchTtlMs: number
  readonly cookieTtlMs: number
}

const VERSION = 'v1'
const CACHE_MS = 5_000
const CACHE_MAX = 10_000

interface Key {
  readonly kid: string
  readonly launch: KeyObject
  readonly session: KeyObject
}

function deriveKey(secret: string): Key {
  const kid = createHash('sha256')
    .update('studiopool-kid\0' + secret)
    .digest('base64url')
    .slice(0, 8)
  // KeyObjects, imported once: createHmac over a Buffer imports the key anew on every call, which
  // was most of a launch token's cost (about 34 µs against 4 µs per MAC, measured on Node 24).
  return {
    kid,
    launch: createSecretKey(createHmac('sha256', secret).update('studiopool/launch/v1').digest()),
    session: createSecretKey(createHmac('sha256', secret).update('studiopool/session/v1').digest()),
  }
}

// eslint-disable-next-line max-lines-per-function -- one object of short sign/verify methods over the same derived keys; splitting it would pass the keys around
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
  const appTokens = new Map<string, string>()
  const switchKey = createSecretKey(createHmac('sha256', secret).update('studiopool/launch-switch/v1').digest())
  const proof = (nonce: string, cookieValue: string) =>
    createHmac('sha256', switchKey).update(`${nonce}\0${cookieValue}`).digest()

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
    const given = canonicalBytes(token.slice(lastDot + 1))
    const expected = createHmac('sha256', key[purpose]).update(body).digest()
    if (!given || given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
    const raw = canonicalBytes(parts[2]!)
    if (!raw) return undefined
    try {
      const text = raw.toString('utf8')
      const payload: unknown = JSON.parse(text)
      if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return undefined
      // The payload we wrote: no other spelling of the same claims (whitespace, escapes, key order).
      if (JSON.stringify(payload) !== text) return undefined
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
    issueLaunch({ instanceId, userId, requester }) {
      const r = typeof requester === 'string' ? { r: requester } : {}
      return sign('launch', {
        i: instanceId,
        u: userId,
        ...r,
        n: randomBytes(16).toString('base64url'),
        e: now() + opts.launchTtlMs,
      })
    },
    verifyLaunch(token) {
      const p = open('launch', token)
      if (!p || typeof p.i !== 'string' || typeof p.u !== 'string' || typeof p.n !== 'string') return undefined
      if (p.r !== undefined && typeof p.r !== 'string') return undefined
      return { instanceId: p.i, userId: p.u, requester: p.r ?? null, nonce: p.n, expiresAt: p.e as number }
    },
    issueSession({ userId, admin, groups, requesters }) {
      const s = requesters ? { s: [...requesters].slice(-MAX_COOKIE_REQUESTERS) } : {}
      return sign('session', { u: userId, a: admin ? 1 : 0, g: [...groups], ...s, e: now() + opts.cookieTtlMs })
    },
    switchProof(nonce, cookieValue) {
      return proof(nonce, cookieValue).toString('base64url')
    },
    checkSwitchProof(nonce, cookieValue, presented) {
      const given = typeof presented === 'string' && presented.length <= 64 ? canonicalBytes(presented) : undefined
      const expected = proof(nonce, cookieValue)
      return given !== undefined && given.length === expected.length && timingSafeEqual(given, expected)
    },
    appToken(instanceId, generation) {
      const k = `${instanceId}\0${generation}`
      let t = appTokens.get(k)
      if (t === undefined) {
        if (appTokens.size >= CACHE_MAX) appTokens.clear()
        appTokens.set(k, (t = deriveAppToken(secret, instanceId, generation)))
      }
      return t
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
      if (p.s !== undefined && !(Array.isArray(p.s) && p.s.every((r) => typeof r === 'string'))) return undefined
      const claims: SessionClaims = Object.freeze({
        userId: p.u,
        admin: p.a === 1,
        groups: Object.freeze(p.g.filter((g): g is string => typeof g === 'string')),
        ...(p.s !== undefined ? { requesters: Object.freeze([...(p.s as string[])]) } : {}),
        expiresAt: p.e as number,
      })
      // Bounded: a flood of distinct valid cookies only costs us a cleared cache.
      if (cache.size >= CACHE_MAX) cache.clear()
      cache.set(value, { claims, until: t + CACHE_MS })
      return claims
    },
  }
}

const B64URL = /^[A-Za-z0-9_-]+$/

/**
 * The bytes of an unpadded base64url string, only when it is the one canonical spelling of them;
 * undefined for padding, other characters, or unused low bits set in the last character.
 */
export function canonicalBytes(s: string): Buffer | undefined {
  if (!B64URL.test(s) || s.length % 4 === 1) return undefined
  const b = Buffer.from(s, 'base64url')
  return b.toString('base64url') === s ? b : undefined
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
/** The query parameter of the "continue as …?" form's POST (gateway/gateway.ts). */
export const SWITCH_PARAM = 'sp_switch'

/**
 * The launch URL handed to the requester: the clean URL plus `?sp_token=<token>`. The gateway
 * trades the token for its cookie and redirects to the same URL without the parameter.
 */
export function launchUrl(gw: GatewayUrlConfig, publicUrl: string, instanceId: string, token: string): string {
  return `${sessionUrl(gw, publicUrl, instanceId)}?${LAUNCH_PARAM}=${encodeURIComponent(token)}`
}
