/**
 * An app's Content-Security-Policy, widened just enough for the warning banner (docs/widget.md):
 * its script (`<prefix>/.studiopool/widget.js`) may load and may fetch `<prefix>/.studiopool/…`,
 * and nothing else changes. The banner styles itself through the CSSOM (never inline markup), so
 * `style-src` is left alone; it builds its DOM without innerHTML, so Trusted Types are no obstacle.
 *
 * For scripts, the effective directives are `script-src-elem` and `script-src` (each present one is
 * widened), else `default-src` (a `script-src` copied from it is appended, so that the app's other
 * fetches stay under its default). Each gets the session's `.studiopool/` path as a source; where
 * the directive uses nonces, hashes or `'strict-dynamic'` (which make host sources not enough), also
 * the gateway's nonce, which the injected tag carries. A nonce is never added to a directive that
 * has neither: it would switch off the app's `'unsafe-inline'`. `'none'` is dropped where a source
 * is added (it may not be combined). `connect-src` (else `default-src`) gets the same path.
 */
export interface WidgetCspSources {
  /** `http://host:port/s/<id>/.studiopool/`: a path source (the trailing slash makes it a prefix). */
  readonly source: string
  /** The nonce of the injected `<script>` (base64url). */
  readonly nonce: string
}

interface Directive {
  readonly name: string
  sources: string[]
}

const SCRIPT_DIRECTIVES = ['script-src-elem', 'script-src'] as const

/** One policy (one header field value) widened; the directives' order and the others' text are kept. */
export function widenCsp(policy: string, add: WidgetCspSources): string {
  const dirs: Directive[] = []
  for (const part of policy.split(';')) {
    const tokens = part
      .trim()
      .split(/[\t\n\f\r ]+/)
      .filter(Boolean)
    if (tokens.length === 0) continue
    dirs.push({ name: tokens[0]!.toLowerCase(), sources: tokens.slice(1) })
  }
  const find = (name: string) => dirs.find((d) => d.name === name)
  const fallback = find('default-src')

  const scripts = SCRIPT_DIRECTIVES.map(find).filter((d): d is Directive => d !== undefined)
  if (scripts.length === 0 && fallback) {
    const copy = { name: 'script-src', sources: [...fallback.sources] }
    dirs.push(copy)
    scripts.push(copy)
  }
  for (const d of scripts) d.sources = allowScript(d.sources, add)

  let connect = find('connect-src')
  if (!connect && fallback) dirs.push((connect = { name: 'connect-src', sources: [...fallback.sources] }))
  if (connect) connect.sources = allowSource(connect.sources, add.source)

  return dirs.map((d) => [d.name, ...d.sources].join(' ')).join('; ')
}

/** A header field value may hold several policies separated by commas (RFC 9110 list): each is widened. */
export function widenCspField(value: string, add: WidgetCspSources): string {
  return value
    .split(',')
    .map((p) => (p.trim() ? widenCsp(p, add) : p))
    .join(', ')
}

function allowSource(sources: readonly string[], source: string): string[] {
  const out = sources.filter((s) => s.toLowerCase() !== "'none'")
  if (!out.includes(source)) out.push(source)
  return out
}

function allowScript(sources: readonly string[], add: WidgetCspSources): string[] {
  const out = allowSource(sources, add.source)
  const strict = sources.some((s) => {
    const l = s.toLowerCase()
    return l === "'strict-dynamic'" || l.startsWith("'nonce-") || /^'sha(256|384|512)-/.test(l)
  })
  if (strict) out.push(`'nonce-${add.nonce}'`)
  return out
}
