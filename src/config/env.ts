import { DEMO_APP_SCRIPT } from '../demo-app/index.js'
import type { ErrorDetail } from '../domain/errors.js'

/** The demo app beside this module's sources (src/demo-app/ in a checkout, dist/demo-app/ in the package). */
export const DEMO_APP = DEMO_APP_SCRIPT

/** A top-level section of the raw file as a mutable object (created when absent). */
export function section(raw: Record<string, unknown>, key: string): Record<string, unknown> {
  const v = raw[key]
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>
  const fresh: Record<string, unknown> = {}
  raw[key] = fresh
  return fresh
}

const envInt = (v: string | undefined): number | string | undefined => {
  if (v === undefined || v === '') return undefined
  return /^\d+$/.test(v) ? Number(v) : v // a non-number is left for the schema to reject with its path
}

/** What applying the environment records: each value's source, and the conflicts it did not apply. */
export interface EnvTrack {
  /** JSON pointer → `env NAME` for every value the environment set. */
  readonly sources: Map<string, string>
  /** Seed variables that disagreed with an explicit file value (the file won). */
  readonly warnings: string[]
  /** The file as written, before the environment (to tell explicit values from absent ones). */
  readonly file: Readonly<Record<string, unknown>>
}

/** The value at a path of a plain object tree, or undefined. */
export function valueAt(root: unknown, path: readonly string[]): unknown {
  let v = root
  for (const k of path) {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined
    v = (v as Record<string, unknown>)[k]
  }
  return v
}

function setAt(raw: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let o = raw
  for (const k of path.slice(0, -1)) o = section(o, k)
  o[path[path.length - 1]!] = value
}

/**
 * Precedence (README "Configuration"): defaults < file < STUDIOPOOL_* variables < flags. The seed's
 * unprefixed variables (PORT, DATABASE_URL, MAX_INSTANCES, …) fill in only what the file leaves out:
 * an explicit file value wins over them, with a warning naming both when they differ (issue 17:
 * `driver: sqlite` plus a stray DATABASE_URL gave Postgres).
 */
function setter(raw: Record<string, unknown>, track: EnvTrack) {
  const env = (path: readonly string[], value: unknown, name: string) => {
    setAt(raw, path, value)
    track.sources.set(`/${path.join('/')}`, `env ${name}`)
  }
  const seed = (path: readonly string[], value: unknown, name: string, fileValue = valueAt(track.file, path)) => {
    if (fileValue === undefined) return env(path, value, name)
    if (String(fileValue) !== String(value))
      track.warnings.push(
        `${name}=${name.endsWith('KEY') ? '(set)' : String(value)} is ignored: the configuration file sets ${path.join('.')} (${JSON.stringify(fileValue)}), and a file value beats the seed's unprefixed variables (use STUDIOPOOL_* variables to override the file)`,
      )
  }
  return { env, seed }
}

/**
 * Environment overrides, including the seed's variables (seeds/000): MIN_FREE_INSTANCES, MAX_INSTANCES,
 * TIMEOUT_INSTANCE (ms), IMAGE_ID…, ARENA_POOL_SERVICE_KEY, PROXY_KEY, PORT, DEFAULT_URL, SERVICE_URL,
 * ROUTE_TO_REPLACE/STRING_TO_REPLACE. Documented in the README's configuration reference.
 */
export function applyEnv(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  problems: ErrorDetail[],
  track: EnvTrack = { sources: new Map(), warnings: [], file: {} },
): void {
  const set = setter(raw, track)
  const sp = envInt(env.STUDIOPOOL_PORT)
  if (sp !== undefined) set.env(['server', 'port'], sp, 'STUDIOPOOL_PORT')
  else {
    const port = envInt(env.PORT)
    if (port !== undefined) set.seed(['server', 'port'], port, 'PORT')
  }
  if (env.STUDIOPOOL_HOST) set.env(['server', 'host'], env.STUDIOPOOL_HOST, 'STUDIOPOOL_HOST')
  if (env.STUDIOPOOL_PUBLIC_URL)
    set.env(['server', 'publicUrl'], env.STUDIOPOOL_PUBLIC_URL.replace(/\/+$/, ''), 'STUDIOPOOL_PUBLIC_URL')
  if (env.STUDIOPOOL_INSTANCE_CALLBACK_URL)
    set.env(
      ['server', 'instanceCallbackUrl'],
      env.STUDIOPOOL_INSTANCE_CALLBACK_URL.replace(/\/+$/, ''),
      'STUDIOPOOL_INSTANCE_CALLBACK_URL',
    )
  if (env.STUDIOPOOL_DATA_DIR) set.env(['server', 'dataDir'], env.STUDIOPOOL_DATA_DIR, 'STUDIOPOOL_DATA_DIR')
  if (env.STUDIOPOOL_LOG_LEVEL) set.env(['server', 'logLevel'], env.STUDIOPOOL_LOG_LEVEL, 'STUDIOPOOL_LOG_LEVEL')
  applyDatabaseUrl(raw, env, track)
  if (env.STUDIOPOOL_AUTH) set.env(['auth', 'mode'], env.STUDIOPOOL_AUTH, 'STUDIOPOOL_AUTH')
  if (env.STUDIOPOOL_POOL_ID) set.env(['pool', 'id'], env.STUDIOPOOL_POOL_ID, 'STUDIOPOOL_POOL_ID')
  const max = envInt(env.MAX_INSTANCES)
  if (max !== undefined) set.seed(['pool', 'maxInstances'], max, 'MAX_INSTANCES')
  if (env.STUDIOPOOL_SECRET) set.env(['gateway', 'secret'], env.STUDIOPOOL_SECRET, 'STUDIOPOOL_SECRET')
  if (env.STUDIOPOOL_SESSION_DOMAIN) {
    set.env(['gateway', 'sessionDomain'], env.STUDIOPOOL_SESSION_DOMAIN, 'STUDIOPOOL_SESSION_DOMAIN')
    set.env(['gateway', 'mode'], 'subdomain', 'STUDIOPOOL_SESSION_DOMAIN')
  }
  if (env.DEFAULT_URL) set.seed(['gateway', 'defaultUrl'], env.DEFAULT_URL, 'DEFAULT_URL')
  if (env.ROUTE_TO_REPLACE) set.seed(['gateway', 'routeToReplace'], env.ROUTE_TO_REPLACE, 'ROUTE_TO_REPLACE')
  if (env.STRING_TO_REPLACE) set.seed(['gateway', 'stringToReplace'], env.STRING_TO_REPLACE, 'STRING_TO_REPLACE')
  if (env.SERVICE_URL) set.seed(['split', 'serviceUrl'], env.SERVICE_URL.replace(/\/+$/, ''), 'SERVICE_URL')
  if (env.STUDIOPOOL_LOGIN) set.env(['dashboard', 'login'], env.STUDIOPOOL_LOGIN, 'STUDIOPOOL_LOGIN')

  // Seed keys become a requester key and a proxy key; the proxy key is also what a split gateway sends.
  const keys: unknown[] = Array.isArray(section(raw, 'auth').keys) ? [...(section(raw, 'auth').keys as unknown[])] : []
  const envKey = (name: string, role: string, variable: string) => {
    track.sources.set(`/auth/keys/${keys.length}`, `env ${variable}`)
    keys.push({ name, role, key: `env:${variable}` })
  }
  if (env.ARENA_POOL_SERVICE_KEY) envKey('arena', 'requester', 'ARENA_POOL_SERVICE_KEY')
  if (env.PROXY_KEY) {
    envKey('proxy', 'proxy', 'PROXY_KEY')
    if (section(raw, 'split').proxyKey === undefined) set.env(['split', 'proxyKey'], 'env:PROXY_KEY', 'PROXY_KEY')
  }
  if (env.STUDIOPOOL_ADMIN_KEY) envKey('admin-env', 'admin', 'STUDIOPOOL_ADMIN_KEY')
  if (keys.length) section(raw, 'auth').keys = keys

  // A file without templates keeps the default one (issue 17: a file with only `dashboard: {admins: [ada]}`).
  if (!('templates' in raw)) seedTemplates(raw, env, max)
  applyDefaultTemplateSeed(raw, env, set.seed, problems)
}

/** STUDIOPOOL_DATABASE_URL beats the file; the seed's DATABASE_URL only fills in a file without a store. */
function applyDatabaseUrl(raw: Record<string, unknown>, env: NodeJS.ProcessEnv, track: EnvTrack): void {
  const name = env.STUDIOPOOL_DATABASE_URL ? 'STUDIOPOOL_DATABASE_URL' : env.DATABASE_URL ? 'DATABASE_URL' : undefined
  if (!name) return
  const dbUrl = env[name]!
  const fileStore = track.file.store as Record<string, unknown> | undefined
  if (name === 'DATABASE_URL' && fileStore && typeof fileStore === 'object' && Object.keys(fileStore).length) {
    const explicit = fileStore.url ?? fileStore.path ?? fileStore.driver
    track.warnings.push(
      `DATABASE_URL is ignored: the configuration file sets store (${JSON.stringify(explicit)}), and a file value beats the seed's unprefixed variables (use STUDIOPOOL_DATABASE_URL to override the file)`,
    )
    return
  }
  if (/^postgres(ql)?:\/\//.test(dbUrl)) raw.store = { ...(raw.store as object), driver: 'postgres', url: dbUrl }
  else raw.store = { driver: 'sqlite', path: dbUrl.replace(/^sqlite:(\/\/)?/, '') }
  track.sources.set('/store', `env ${name}`)
}

/** MIN_FREE_INSTANCES and TIMEOUT_INSTANCE apply to the default template, unless the file sets them there. */
function applyDefaultTemplateSeed(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  seed: (path: readonly string[], value: unknown, name: string) => void,
  problems: ErrorDetail[],
): void {
  const minFree = envInt(env.MIN_FREE_INSTANCES)
  const timeout = envInt(env.TIMEOUT_INSTANCE)
  if (minFree === undefined && timeout === undefined) return
  const templates = raw.templates as Record<string, Record<string, unknown>> | undefined
  const def = (raw.pool as Record<string, unknown> | undefined)?.defaultTemplate as string | undefined
  const name = def ?? (templates ? Object.keys(templates)[0] : undefined)
  const t = name && templates ? templates[name] : undefined
  if (!t || !name) {
    problems.push({
      path: '/templates',
      message: 'MIN_FREE_INSTANCES/TIMEOUT_INSTANCE set but there is no default template',
    })
    return
  }
  if (minFree !== undefined) seed(['templates', name, 'minFree'], minFree, 'MIN_FREE_INSTANCES')
  if (timeout !== undefined) seed(['templates', name, 'idleTimeout'], timeout, 'TIMEOUT_INSTANCE')
}

/** With no file, the seed's environment alone must describe a working deployment (architecture.md "Configuration"). */
function seedTemplates(raw: Record<string, unknown>, env: NodeJS.ProcessEnv, max: number | string | undefined): void {
  if (env.IMAGE_ID) {
    const settings: Record<string, unknown> = {
      imageId: env.IMAGE_ID,
      instanceType: env.IMAGE_TYPE ?? 't2.micro',
      tags: { Purpose: 'RStudio' },
      tokens: { registry: env.ACCOUNT ?? '' },
    }
    if (env.KEY_NAME) settings.keyName = env.KEY_NAME
    if (env.SECURITY_GROUP) settings.securityGroupIds = env.SECURITY_GROUP.split(',').map((s) => s.trim())
    if (env.INSTANCE_PROFILE) settings.iamInstanceProfile = env.INSTANCE_PROFILE
    raw.templates = {
      rstudio: {
        displayName: 'RStudio',
        provider: 'ec2',
        port: 8787,
        pathMode: 'strip',
        startTimeout: '15m',
        ec2: settings,
      },
    }
    if (env.REGION) raw.providers = { ...(raw.providers as object), ec2: { region: env.REGION } }
  } else {
    raw.templates = { demo: demoTemplate() }
  }
  // The seed's MAX_INSTANCES capped its one kind of instance: the environment-built template too, not only the pool.
  if (max !== undefined)
    for (const t of Object.values(raw.templates as Record<string, Record<string, unknown>>)) t.maxInstances = max
}

/** The shipped demo app: runs anywhere Node runs, so `npm start` works with no R or Jupyter. */
export function demoTemplate(): Record<string, unknown> {
  return {
    displayName: 'Demo session',
    description: 'A small web app with a page and a WebSocket echo, shipped with studiopool.',
    provider: 'local',
    minFree: 1,
    maxInstances: 10,
    idleTimeout: '30m',
    startTimeout: '30s',
    pathMode: 'strip',
    healthPath: '/healthz',
    local: { command: ['node', DEMO_APP, '--port', '{{port}}', '--base-path', '{{basePath}}'] },
  }
}
