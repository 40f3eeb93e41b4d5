import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { KEY_ID_PATTERN, randomBase32 } from '../domain/ids.js'
import { AppError, UnauthorizedError } from '../domain/errors.js'
import type { ApiKey, KeyRole, Principal } from '../domain/keys.js'
import type { Store } from '../store/store.js'

/**
 * API keys. Generated keys look like `sp_<id>_<secret>`: the id finds the row, the secret's SHA-256 is
 * compared in constant time. Keys are 256-bit random, so a fast hash is enough (a slow KDF protects
 * low-entropy passwords, not random keys). Static keys from the config (the seed's
 * ARENA_POOL_SERVICE_KEY and PROXY_KEY) are hashed at start and compared the same way.
 */
// `sp_<key id>_<secret>`: the key id's rule is domain/ids.ts's KEY_ID_PATTERN, without its anchors.
const KEY_RE = new RegExp(`^sp_(${KEY_ID_PATTERN.slice(1, -1)})_([A-Za-z0-9_-]{43})$`)
const CACHE_MS = 5_000

const sha256 = (s: string) => createHash('sha256').update(s).digest()

export interface CreatedKey {
  readonly key: ApiKey
  /** Shown once, never stored. */
  readonly secret: string
}

export class Keyring {
  readonly #store: Store
  readonly #static: { name: string; role: KeyRole; hash: Buffer }[]
  /** Positive lookups for a few seconds (hash of the presented key → principal); cleared on revoke. */
  readonly #cache = new Map<string, { p: Principal; until: number; id: string | null }>()

  constructor(store: Store, staticKeys: readonly { name: string; role: KeyRole; key: string }[]) {
    this.#store = store
    this.#static = staticKeys.map((k) => ({ name: k.name, role: k.role, hash: sha256(k.key) }))
  }

  /** Reads `Authorization: Bearer <key>` or `x-api-key`. Throws UnauthorizedError. */
  async authenticate(headers: Record<string, string | string[] | undefined>): Promise<Principal> {
    const presented = extractKey(headers)
    if (!presented) throw new UnauthorizedError('missing API key (Authorization: Bearer <key>)')
    if (presented.length > 512) throw new UnauthorizedError()
    const digest = sha256(presented)
    const cacheKey = digest.toString('base64')
    const hit = this.#cache.get(cacheKey)
    const now = Date.now()
    if (hit && hit.until > now) return hit.p

    let found: { p: Principal; id: string | null } | undefined
    for (const k of this.#static) {
      if (timingSafeEqual(k.hash, digest)) found = { p: { kind: 'key', name: k.name, role: k.role }, id: null }
    }
    const m = KEY_RE.exec(presented)
    if (!found && m) {
      const row = await this.#store.getKey(m[1]!)
      const expected = row ? Buffer.from(row.hash, 'hex') : Buffer.alloc(32)
      const ok = timingSafeEqual(expected, sha256(m[2]!)) && row !== undefined && row.revokedAt === null
      if (ok) {
        found = { p: { kind: 'key', name: row.name, role: row.role }, id: row.id }
        void this.#store.touchKey(row.id, now).catch(() => {})
      }
    }
    if (!found) throw new UnauthorizedError('invalid or revoked API key')
    if (this.#cache.size > 10_000) this.#cache.clear()
    this.#cache.set(cacheKey, { ...found, until: now + CACHE_MS })
    return found.p
  }

  async create(name: string, role: KeyRole, now = Date.now()): Promise<CreatedKey> {
    if (
      this.#static.some((k) => k.name === name) ||
      (await this.#store.listKeys()).some((k) => k.name === name && k.revokedAt === null)
    ) {
      throw new AppError('CONFLICT', `a key named "${name}" exists`)
    }
    const id = randomBase32(12)
    const secret = randomBytes(32).toString('base64url')
    const key: ApiKey = {
      id,
      name,
      role,
      hash: sha256(secret).toString('hex'),
      createdAt: now,
      revokedAt: null,
      lastUsedAt: null,
    }
    await this.#store.insertKey(key)
    return { key, secret: `sp_${id}_${secret}` }
  }

  async revoke(id: string, now = Date.now()): Promise<boolean> {
    const ok = await this.#store.revokeKey(id, now)
    for (const [k, v] of this.#cache) if (v.id === id) this.#cache.delete(k)
    return ok
  }

  async list(): Promise<(Omit<ApiKey, 'hash'> & { source: 'store' | 'config' })[]> {
    const rows = await this.#store.listKeys()
    return [
      ...this.#static.map((k) => ({
        id: `config:${k.name}`,
        name: k.name,
        role: k.role,
        createdAt: 0,
        revokedAt: null,
        lastUsedAt: null,
        source: 'config' as const,
      })),
      ...rows.map(({ hash: _h, ...rest }) => ({ ...rest, source: 'store' as const })),
    ]
  }

  async hasAdmin(): Promise<boolean> {
    if (this.#static.some((k) => k.role === 'admin')) return true
    return (await this.#store.listKeys()).some((k) => k.role === 'admin' && k.revokedAt === null)
  }
}

export function extractKey(headers: Record<string, string | string[] | undefined>): string | undefined {
  const auth = headers.authorization
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth)
    if (m) return m[1]
  }
  const x = headers['x-api-key']
  return typeof x === 'string' && x.length ? x.trim() : undefined
}
