/**
 * The one cookie module (issue 10): the gateway and the dashboard (web/session.ts) read, strip
 * and set the session cookie by the same rules.
 *
 * Reading a `Cookie` header (RFC 6265 §5.4 as browsers send it):
 * - pairs are separated by `;`, with optional spaces or tabs around each pair;
 * - a name matches exactly and case-sensitively (`xsp_session` and `SP_SESSION` are other cookies);
 * - a browser may send several cookies of one name (other paths or domains, most specific first):
 *   every value is returned, in order, up to `MAX_VALUES`, and the caller takes the first that verifies;
 * - a value wrapped in double quotes is read without them;
 * - values are never percent-decoded; an empty value, or one with a byte a cookie value may not
 *   hold (control characters, space, `"`, `,`, `;`, `\`, non-ASCII), is skipped as not ours.
 */

/** At most this many values of one name are looked at (a header stuffed with copies is not worth more). */
export const MAX_VALUES = 8

/** Values of one cookie name in a Cookie header, in the order the browser sent them. */
export function cookieValues(header: string | undefined, name: string): string[] {
  if (!header || header.indexOf(name) < 0) return []
  const out: string[] = []
  let start = 0
  const n = header.length
  while (start < n && out.length < MAX_VALUES) {
    let end = header.indexOf(';', start)
    if (end < 0) end = n
    const v = pairValue(header, start, end, name)
    if (v !== null) out.push(v)
    start = end + 1
  }
  return out
}

/** The first value of `name` for which `verify` returns something, with that value. */
export function firstValid<T>(
  header: string | undefined,
  name: string,
  verify: (value: string) => T | undefined,
): { claims: T; value: string } | undefined {
  for (const value of cookieValues(header, name)) {
    const claims = verify(value)
    if (claims !== undefined) return { claims, value }
  }
  return undefined
}

/** The Cookie header without any cookie of `name` (undefined when nothing else is left). */
export function withoutCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return header
  const at = header.indexOf(name)
  if (at < 0) return header
  // The common case: ours is the only cookie.
  if (at === 0 && header.indexOf(';') < 0 && pairName(header, 0, header.length) === name) return undefined
  const kept: string[] = []
  for (const part of header.split(';')) {
    const t = trimOws(part)
    if (t && pairName(t, 0, t.length) !== name) kept.push(t)
  }
  return kept.length ? kept.join('; ') : undefined
}

export interface CookieAttributes {
  readonly path?: string
  readonly maxAgeSeconds: number
  /** https: the browser sends it back over https only. */
  readonly secure: boolean
}

/** A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path `/` unless said. */
export function setCookie(name: string, value: string, a: CookieAttributes): string {
  return `${name}=${value}; Path=${a.path ?? '/'}; Max-Age=${a.maxAgeSeconds}; HttpOnly; SameSite=Lax${a.secure ? '; Secure' : ''}`
}

/** The value of the pair header[start, end) when its name is `name` and the value is well formed, else null. */
function pairValue(header: string, start: number, end: number, name: string): string | null {
  while (start < end && isOws(header.charCodeAt(start))) start++
  if (!header.startsWith(name, start) || header.charCodeAt(start + name.length) !== 61 /* = */) return null
  let i = start + name.length + 1
  while (end > i && isOws(header.charCodeAt(end - 1))) end--
  if (end - i >= 2 && header.charCodeAt(i) === 34 /* " */ && header.charCodeAt(end - 1) === 34) {
    i++
    end--
  }
  if (end <= i) return null
  for (let k = i; k < end; k++) if (!isCookieOctet(header.charCodeAt(k))) return null
  return header.slice(i, end)
}

function pairName(pair: string, start: number, end: number): string {
  const eq = pair.indexOf('=', start)
  return trimOws(pair.slice(start, eq < 0 || eq > end ? end : eq))
}

function isOws(c: number): boolean {
  return c === 32 || c === 9
}

function trimOws(s: string): string {
  let a = 0
  let b = s.length
  while (a < b && isOws(s.charCodeAt(a))) a++
  while (b > a && isOws(s.charCodeAt(b - 1))) b--
  return s.slice(a, b)
}

/** RFC 6265 cookie-octet: visible ASCII but `"`, `,`, `;` and `\`. */
function isCookieOctet(c: number): boolean {
  return c >= 0x21 && c <= 0x7e && c !== 34 && c !== 44 && c !== 59 && c !== 92
}
