import { existsSync, readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Value } from '@sinclair/typebox/value'
import { parse as parseYaml } from 'yaml'
import { TEMPLATE_NAME_RE } from '../domain/ids.js'
import type { ErrorDetail } from '../domain/errors.js'
import { applyEnv, section, type EnvTrack } from './env.js'
import { explainErrors } from './explain.js'
import { crossFieldProblems, finish } from './finish.js'
import { ConfigSchema } from './schema.js'
import type { Config } from './types.js'

export { DEMO_APP, demoTemplate } from './env.js'
export { DEFAULTS } from './schema.js'

/** Thrown when the configuration is invalid; lists every problem with its path. */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID'
  readonly problems: readonly ErrorDetail[]
  constructor(problems: readonly ErrorDetail[], source: string, hint?: string) {
    super(
      `invalid configuration (${source}):\n${problems.map((p) => `  - ${p.path ?? '/'}: ${p.message}`).join('\n')}${hint ? `\n${hint}` : ''}`,
    )
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

/** A loaded configuration with what `config print` and the start-up warnings need. */
export interface LoadedConfig {
  readonly config: Config
  /** Conflicts resolved by the documented precedence (logged as warnings at start). */
  readonly warnings: readonly string[]
  /** JSON pointer → `file`, `env NAME` or `flag --name` for every value not left at its default. */
  readonly sources: ReadonlyMap<string, string>
  /** The configuration as a file would say it (before decoding), every default filled in. */
  readonly effective: Readonly<Record<string, unknown>>
  /** Where the file was read from, or `defaults and environment`. */
  readonly source: string
}

/**
 * defaults < file < env < flags. Returns a deep-frozen Config or throws ConfigError listing every problem.
 */
export function loadConfig(opts: LoadOptions = {}): Config {
  return loadConfigDetailed(opts).config
}

/**
 * The steps: read the file; check what the schema cannot see in it (renamed keys, template names);
 * apply the environment and the flags; fill the schema's defaults and validate (messages that name the
 * key, the value and what is allowed: config/explain.ts); decode (config/schema.ts); finish what needs
 * the environment and the working directory; check the rules across fields.
 */
export function loadConfigDetailed(opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env
  const cwd = opts.cwd ?? process.cwd()
  const { raw, source } = readFile(opts, cwd)
  const problems: ErrorDetail[] = []
  checkRenamed(raw, problems)
  checkTemplateNames(raw, problems)
  const track: EnvTrack = { sources: new Map(), warnings: [], file: structuredClone(raw) }
  applyEnv(raw, env, problems, track)
  applyFlags(raw, opts.overrides ?? {}, track.sources)

  const withDefaults = Value.Default(ConfigSchema, raw) as Record<string, unknown>
  for (const p of explainErrors(ConfigSchema, withDefaults)) {
    if (!problems.some((q) => q.path === p.path)) problems.push(p)
  }
  if (problems.length) throw new ConfigError(problems, source)

  const effective = structuredClone(withDefaults)
  const cfg = finish(Value.Decode(ConfigSchema, withDefaults) as Config, { env, cwd }, problems)
  problems.push(...crossFieldProblems(cfg))
  if (problems.length) throw new ConfigError(problems, source)
  const sources = new Map(track.sources)
  for (const path of leafPaths(track.file)) if (!sources.has(path)) sources.set(path, 'file')
  return { config: deepFreeze(cfg), warnings: track.warnings, sources, effective, source }
}

const FLAGS = { host: '--host', port: '--port', dataDir: '--data-dir', logLevel: '--log-level' } as const

function applyFlags(
  raw: Record<string, unknown>,
  o: NonNullable<LoadOptions['overrides']>,
  sources: Map<string, string>,
) {
  for (const [k, flag] of Object.entries(FLAGS) as [keyof typeof FLAGS, string][]) {
    if (o[k] === undefined) continue
    section(raw, 'server')[k] = o[k]
    sources.set(`/server/${k}`, `flag ${flag}`)
  }
}

/** JSON pointers of every scalar and list in a file (a list is one value). */
function leafPaths(v: unknown, base = ''): string[] {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return base ? [base] : []
  return Object.entries(v).flatMap(([k, x]) => leafPaths(x, `${base}/${k}`))
}

/** The file (or inline text) as a mapping, with `{{configDir}}` substituted; `{}` when there is none. */
function readFile(opts: LoadOptions, cwd: string): { raw: Record<string, unknown>; source: string } {
  const file = opts.file ?? (existsSync(resolve(cwd, 'studiopool.yaml')) ? 'studiopool.yaml' : undefined)
  if (opts.text === undefined && !file) return { raw: {}, source: 'defaults and environment' }
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
  return { raw, source }
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
