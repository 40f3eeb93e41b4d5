import { randomBytes } from 'node:crypto'

/**
 * instanceIds are studiopool's own: 20 characters of lowercase base32 (100 bits),
 * URL-safe and a valid DNS label, so they work in path and subdomain mode alike.
 * Never the provider's id (architecture.md "Words").
 */
export const INSTANCE_ID_PATTERN = '^[a-z2-7]{20}$'
export const INSTANCE_ID_RE = new RegExp(INSTANCE_ID_PATTERN)
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

/**
 * User ids come from other applications: any printable text up to 200 characters, no control
 * characters. The edges (API schemas, dashboard logins) build their checks from these constants.
 */
export const USER_ID_MAX_LENGTH = 200
/** No C0 control character and no DEL; the length is checked apart (USER_ID_MAX_LENGTH). */
export const USER_ID_PATTERN = '^[^\\u0000-\\u001f\\u007f]+$'
export const USER_ID_RE = new RegExp(USER_ID_PATTERN)
/** A user id as a login names it: within the length, no control characters, not only blanks. */
export function isUserId(value: unknown): value is string {
  return (
    typeof value === 'string' && value.length <= USER_ID_MAX_LENGTH && USER_ID_RE.test(value) && value.trim().length > 0
  )
}

/** Template names: lowercase slug, a valid DNS label. */
export const TEMPLATE_NAME_PATTERN = '^[a-z][a-z0-9-]{0,62}$'
export const TEMPLATE_NAME_RE = new RegExp(TEMPLATE_NAME_PATTERN)
export function isTemplateName(value: unknown): value is string {
  return typeof value === 'string' && TEMPLATE_NAME_RE.test(value)
}

/** API key ids: 12 characters of lowercase base32 (the `sp_<id>_<secret>` key's middle part). */
export const KEY_ID_PATTERN = '^[a-z2-7]{12}$'
export const KEY_ID_RE = new RegExp(KEY_ID_PATTERN)
export function isKeyId(value: unknown): value is string {
  return typeof value === 'string' && KEY_ID_RE.test(value)
}

/** API key names, chosen by the admin: 1–64 letters, digits, dots, dashes or underscores. */
export const KEY_NAME_PATTERN = '^[A-Za-z0-9_.-]{1,64}$'
export const KEY_NAME_RE = new RegExp(KEY_NAME_PATTERN)
export function isKeyName(value: unknown): value is string {
  return typeof value === 'string' && KEY_NAME_RE.test(value)
}

/**
 * The largest instant the API accepts, epoch ms: 9999-12-31T23:59:59.999Z. `new Date(1e20)` throws
 * RangeError in toISOString() and Postgres bigint stops at 2^63, so every epoch is bounded here
 * first (issue 9 item 8).
 */
export const MAX_EPOCH_MS = 253_402_300_799_999

/** C0/C1 control characters, DEL, or a UTF-16 surrogate that is not half of a pair. */
const UNSAFE_TEXT_RE =
  /[\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/**
 * True when text may be used as (part of) an id: no control characters (a NUL makes Postgres
 * refuse the whole statement) and no lone surrogates (stored as invalid UTF-8, then never found).
 */
export function isSafeText(value: string): boolean {
  return !UNSAFE_TEXT_RE.test(value)
}
