import { existsSync, readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Value } from '@sinclair/typebox/value'
import { parse as parseYaml } from 'yaml'
import { TEMPLATE_NAME_RE } from '../domain/ids.js'
import type { ErrorDetail } from '../domain/errors.js'
import { applyEnv, section } from './env.js'
import { crossFieldProblems, finish } from './finish.js'
import { ConfigSchema } from './schema.js'
import type { Config } from './types.js'

export { DEMO_APP, demoTemplate } from './env.js'
export { DEFAULTS } from './schema.js'

/** Thrown when the configuration is invalid; lists every problem with its path. */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID'
  readonly problems: readonly ErrorDetail[]
  constructor(problems: readonly ErrorDetail[], source: string) {
    super(`invalid configuration (${source}):\n${problems.map((p) => `  - ${p.path ?? '/'}: ${p.message}`).join('\n')}`)
    this.problems = problems
  }
}

export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

/** Keys that were renamed; using the old name fails and names the new one. */
const RENAMED: Record<string, string> = {
  'pool.minFreeInstances': 'templates.<name>.minFree',
  'templates.*.timeout': 'templates.<name>.idleTimeout',
  'templates.*.idleTimeoutMs': 'templates.<name>.idleTimeout',
  'gateway.cookieSecret': 'gateway.secret',
}

export interface LoadOptions {
  /** Path to the YAML file; when absent, `./studiopool.yaml` is used if it exists. */
  readonly file?: string
  readonly env?: NodeJS.ProcessEnv
  readonly cwd?: string
  /** Command-line flags, applied last. */
  readonly overrides?: { host?: string; port?: number; dataDir?: string; logLevel?: string }
  /** Text to use instead of reading a file (tests). */
  readonly text?: string
}

/**
 * defaults < file < env < flags. Returns a deep-frozen Config or throws ConfigError listing every problem.
 * The steps: read the file; check what the schema cannot see in it (renamed keys, template names);
 * apply the environment and the flags; fill the schema's defaults and validate; decode (config/schema.ts);
 * finish what needs the environment and the working directory; check the rules across fields.
 */
export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env
  const cwd = opts.cwd ?? process.cwd()
  const { raw, source, hasFile } = readFile(opts, cwd)
  const problems: ErrorDetail[] = []
  checkRenamed(raw, problems)
  checkTemplateNames(raw, problems)
  applyEnv(raw, env, hasFile, problems)
  const o = opts.overrides ?? {}
  if (o.host !== undefined) section(raw, 'server').host = o.host
  if (o.port !== undefined) section(raw, 'server').port = o.port
  if (o.dataDir !== undefined) section(raw, 'server').dataDir = o.dataDir
  if (o.logLevel !== undefined) section(raw, 'server').logLevel = o.logLevel

  const withDefaults = Value.Default(ConfigSchema, raw)
  for (const e of Value.Errors(ConfigSchema, withDefaults)) {
    // Unions report once per branch; keep the first message per path.
    if (problems.some((p) => p.path === e.path)) continue
    problems.push({ path: e.path || '/', message: e.message })
  }
  if (problems.length) throw new ConfigError(problems, source)

  const cfg = finish(Value.Decode(ConfigSchema, withDefaults) as Config, { env, cwd }, problems)
  problems.push(...crossFieldProblems(cfg))
  if (problems.length) throw new ConfigError(problems, source)
  return deepFreeze(cfg)
}

/** The file (or inline text) as a mapping, with `{{configDir}}` substituted; `{}` when there is none. */
function readFile(opts: LoadOptions, cwd: string): { raw: Record<string, unknown>; source: string; hasFile: boolean } {
  const file = opts.file ?? (existsSync(resolve(cwd, 'studiopool.yaml')) ? 'studiopool.yaml' : undefined)
  if (opts.text === undefined && !file) return { raw: {}, source: 'defaults and environment', hasFile: false }
  const source = opts.text !== undefined ? 'inline text' : resolve(cwd, file!)
  let text: string
  try {
    text = opts.text ?? readFileSync(source, 'utf8')
  } catch (err) {
    throw new ConfigError([{ path: '/', message: `cannot read ${source}: ${(err as Error).message}` }], source)
  }
  let parsed: unknown
  try {
    parsed = parseYaml(text) ?? {}
  } catch (err) {
    throw new ConfigError([{ path: '/', message: `not valid YAML: ${(err as Error).message}` }], source)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError([{ path: '/', message: 'the file must hold a mapping of keys' }], source)
  }
  // `{{configDir}}`: the directory of the configuration file (the working directory for inline text),
  // so that a shipped file can name files next to it (examples/studiopool.yaml's Shiny app).
  const raw = withConfigDir(parsed, opts.text !== undefined ? cwd : dirname(source)) as Record<string, unknown>
  return { raw, source, hasFile: true }
}

/** The schema's key pattern alone does not reject other keys (a record's patternProperties), so names are checked here. */
function checkTemplateNames(raw: Record<string, unknown>, problems: ErrorDetail[]): void {
  const tpl = raw.templates
  if (!tpl || typeof tpl !== 'object' || Array.isArray(tpl)) return
  for (const name of Object.keys(tpl)) {
    if (!TEMPLATE_NAME_RE.test(name))
      problems.push({
        path: `/templates/${name}`,
        message: 'template names are lowercase letters, digits and "-", starting with a letter (at most 63)',
      })
  }
}

function withConfigDir(v: unknown, dir: string): unknown {
  if (typeof v === 'string') return v.replaceAll('{{configDir}}', dir)
  if (Array.isArray(v)) return v.map((x) => withConfigDir(x, dir))
  if (v && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, withConfigDir(x, dir)]))
  return v
}

function checkRenamed(raw: Record<string, unknown>, problems: ErrorDetail[]): void {
  for (const [old, now] of Object.entries(RENAMED)) {
    const [a, b, c] = old.split('.')
    const top = raw[a!]
    if (typeof top !== 'object' || top === null) continue
    if (b === '*') {
      for (const [name, t] of Object.entries(top as Record<string, unknown>)) {
        if (t && typeof t === 'object' && c! in (t as object))
          problems.push({ path: `/${a}/${name}/${c}`, message: `renamed: use ${now}` })
      }
    } else if (b! in (top as object)) {
      problems.push({ path: `/${a}/${b}`, message: `renamed: use ${now}` })
    }
  }
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o)
    for (const v of Object.values(o)) deepFreeze(v)
  }
  return o
}

/**
 * Where instances post progress, and the setting it comes from (for error messages): the explicit
 * `server.instanceCallbackUrl`, else `SERVICE_URL` (the seed's address of the pool service, also
 * `split.serviceUrl`), else `server.publicUrl`.
 */
export function instanceCallbackBase(cfg: Config): { url: string; setting: string } {
  if (cfg.server.instanceCallbackUrl && cfg.server.instanceCallbackUrl !== cfg.split.serviceUrl) {
    return {
      url: cfg.server.instanceCallbackUrl,
      setting: 'server.instanceCallbackUrl (STUDIOPOOL_INSTANCE_CALLBACK_URL)',
    }
  }
  if (cfg.server.instanceCallbackUrl)
    return { url: cfg.server.instanceCallbackUrl, setting: 'SERVICE_URL (split.serviceUrl)' }
  return {
    url: cfg.server.publicUrl,
    setting: 'server.publicUrl (STUDIOPOOL_PUBLIC_URL; by default the listen address)',
  }
}

/** True for addresses that, on another machine, point at that machine itself. */
export function isLoopbackUrl(url: string): boolean {
  let host: string
  try {
    host = new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase()
  } catch {
    return false
  }
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    /^127\./.test(host) ||
    host === '::1' ||
    host === '0.0.0.0' ||
    host === '::' ||
    /^::ffff:127\./.test(host)
  )
}

/** A copy with another public URL (used when the port was 0 and is known only after listen). */
export function withPublicUrl(cfg: Config, publicUrl: string): Config {
  return deepFreeze({ ...cfg, server: { ...cfg.server, publicUrl } })
}
