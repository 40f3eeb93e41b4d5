import { randomBytes } from 'node:crypto'

/**
 * instanceIds are studiopool's own: 20 characters of lowercase base32 (100 bits),
 * URL-safe and a valid DNS label, so they work in path and subdomain mode alike.
 * Never the provider's id (DESIGN.md "Words").
 */
export const INSTANCE_ID_RE = /^[a-z2-7]{20}$/
const B32 = 'abcdefghijklmnopqrstuvwxyz234567'

export function randomBase32(length: number): string {
  const bytes = randomBytes(length)
  let out = ''
  for (let i = 0; i < length; i++) out += B32[bytes[i]! & 31]
  return out
}

export function newInstanceId(): string {
  return randomBase32(20)
}

export function isInstanceId(value: unknown): value is string {
  return typeof value === 'string' && INSTANCE_ID_RE.test(value)
}

/** User ids come from other applications: any printable text up to 200 characters, no control characters. */
export const USER_ID_RE = /^[^\u0000-\u001f\u007f]{1,200}$/
export function isUserId(value: unknown): value is string {
  return typeof value === 'string' && USER_ID_RE.test(value) && value.trim().length > 0
}

/** Template names: lowercase slug. */
export const TEMPLATE_NAME_RE = /^[a-z][a-z0-9-]{0,62}$/
