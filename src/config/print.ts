import { stringify } from 'yaml'
import type { LoadedConfig } from './load.js'

/**
 * `studiopool config print`: the effective configuration as a file would say it (every default filled
 * in), each value followed by where it came from — `# default`, `# file`, `# env NAME`, `# flag --x` —
 * and every secret redacted (a reference `env:NAME` / `file:PATH` is shown: it is not the secret).
 */
export function renderEffective(loaded: Pick<LoadedConfig, 'effective' | 'sources' | 'source'>): string {
  const lines = [`# effective configuration (file: ${loaded.source})`]
  render(loaded.effective, '', 0, loaded.sources, lines)
  return lines.join('\n') + '\n'
}

/** JSON pointers whose values are secrets (`*` = any key or index). */
const SECRET_PATHS = [
  /^\/auth\/keys\/\d+\/key$/,
  /^\/gateway\/secret$/,
  /^\/split\/proxyKey$/,
  /^\/dashboard\/oidc\/clientSecret$/,
  /^\/store\/url$/,
  /^\/hooks\/\d+\/env\/[^/]+$/,
  /^\/providers\/[^/]+\/.*(secret|password|token|key)$/i,
]

export function redact(path: string, value: unknown): unknown {
  if (typeof value !== 'string' || !SECRET_PATHS.some((re) => re.test(path))) return value
  if (/^(env|file):/.test(value)) return value
  if (path === '/store/url') {
    try {
      const u = new URL(value)
      if (u.password) u.password = 'redacted'
      return u.toString()
    } catch {
      return '[redacted]'
    }
  }
  return '[redacted]'
}

/** The source of a path: its own or its nearest ancestor's (a list or a section the environment set). */
function sourceOf(path: string, sources: ReadonlyMap<string, string>): string {
  for (let p = path; p; p = p.slice(0, p.lastIndexOf('/'))) {
    const s = sources.get(p)
    if (s) return s
  }
  return 'default'
}

function render(
  value: unknown,
  path: string,
  depth: number,
  sources: ReadonlyMap<string, string>,
  out: string[],
): void {
  const pad = '  '.repeat(depth)
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const p = `${path}/${k}`
    const key = /^[A-Za-z0-9_.-]+$/.test(k) ? k : JSON.stringify(k)
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) {
      out.push(`${pad}${key}:`)
      render(v, p, depth + 1, sources, out)
      continue
    }
    const shown = Array.isArray(v) ? v.map((x, i) => redactDeep(`${p}/${i}`, x)) : redact(p, v)
    const text = stringify(shown, { flowCollectionPadding: false, lineWidth: 0, collectionStyle: 'flow' }).trim()
    out.push(`${pad}${key}: ${text}  # ${sourceOf(p, sources)}`)
  }
}

function redactDeep(path: string, v: unknown): unknown {
  if (v && typeof v === 'object' && !Array.isArray(v))
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redactDeep(`${path}/${k}`, x)]))
  return redact(path, v)
}
