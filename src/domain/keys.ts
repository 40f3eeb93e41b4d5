/** `metrics`: may read `/metrics` and nothing else (a scraper's key that cannot act on sessions). */
export const KEY_ROLES = ['requester', 'proxy', 'admin', 'metrics'] as const
export type KeyRole = (typeof KEY_ROLES)[number]

export interface ApiKey {
  readonly id: string
  readonly name: string
  readonly role: KeyRole
  /** SHA-256 hex of the secret part. Keys are 256-bit random, so a fast hash is enough. */
  readonly hash: string
  readonly createdAt: number
  readonly revokedAt: number | null
  readonly lastUsedAt: number | null
}

/** Who is calling: an API key, a dashboard user, or the system itself. */
export type Principal =
  | { readonly kind: 'key'; readonly name: string; readonly role: KeyRole }
  | { readonly kind: 'user'; readonly userId: string; readonly groups: readonly string[]; readonly admin: boolean }
  | { readonly kind: 'system' }
