/**
 * Identity to apps (architecture.md contract 5, issue 8): which request header fields the gateway never
 * passes on from a client, and the template's `upstreamHeaders` it sends instead. Pure rules, used
 * by the config loader (validation) and the gateway (forwarding).
 */

/** Client-sent fields that claim an identity; removed from every proxied request and WebSocket upgrade. */
const IDENTITY_NAMES = new Set([
  'x-forwarded-user',
  'x-forwarded-groups',
  'x-forwarded-email',
  'x-forwarded-preferred-username',
  'x-forwarded-access-token',
  'x-remote-user',
  'x-remote-groups',
  'x-remote-email',
  'remote-user',
  'remote-groups',
  'remote-email',
  'remote-name',
  'x-webauth-user',
  'x-user',
  'x-email',
])

/** Prefixes of identity fields: oauth2-proxy's `X-Auth-Request-*`, our own `X-Studiopool-*`, Azure's principal headers. */
const IDENTITY_PREFIXES = ['x-auth-request-', 'x-studiopool-', 'x-ms-client-principal']

/** `name` lowercased. */
export function isIdentityHeader(lower: string): boolean {
  if (IDENTITY_NAMES.has(lower)) return true
  for (const p of IDENTITY_PREFIXES) if (lower.startsWith(p)) return true
  return false
}

/** Tokens an `upstreamHeaders` value may use. */
export const UPSTREAM_HEADER_TOKENS = ['appToken', 'user', 'instanceId'] as const
export type UpstreamHeaderToken = (typeof UPSTREAM_HEADER_TOKENS)[number]

/** RFC 9110 field-name (token). */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/

/** Fields the gateway sets or frames itself; a template cannot set them. */
const RESERVED = new Set([
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'cookie',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-prefix',
  'x-rstudio-root-path',
  'expect',
])

/** Problems with one `upstreamHeaders` entry (empty when fine). */
export function checkUpstreamHeader(name: string, value: unknown): string[] {
  const out: string[] = []
  if (!FIELD_NAME.test(name)) out.push(`"${name}" is not a header field name`)
  else if (RESERVED.has(name.toLowerCase())) out.push(`"${name}" is set by the gateway itself`)
  else if (isIdentityHeader(name.toLowerCase()))
    out.push(`"${name}" is an identity header the gateway sets for the owner`)
  if (typeof value !== 'string') {
    out.push('the value must be a string')
    return out
  }
  if (value.length > 1000) out.push('the value is longer than 1000 characters')
  if (/[^\x20-\x7e]/.test(value)) out.push('the value may hold printable ASCII only')
  for (const m of value.matchAll(/\{\{\s*([^}]*?)\s*\}\}/g)) {
    if (!(UPSTREAM_HEADER_TOKENS as readonly string[]).includes(m[1]!))
      out.push(`unknown token {{${m[1]}}} (known: ${UPSTREAM_HEADER_TOKENS.map((t) => `{{${t}}}`).join(', ')})`)
  }
  return out
}

/** A header value as the app gets it: printable ASCII kept, anything else percent-encoded (never CR/LF). */
export function headerSafe(value: string): string {
  return /^[\x20-\x7e]*$/.test(value) ? value : encodeURIComponent(value)
}

/** The value with its tokens filled in. */
export function renderUpstreamHeader(value: string, tokens: Readonly<Record<UpstreamHeaderToken, string>>): string {
  return headerSafe(
    value.replace(/\{\{\s*(appToken|user|instanceId)\s*\}\}/g, (_m, t: UpstreamHeaderToken) => tokens[t]),
  )
}
