import { existsSync, readFileSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Value } from '@sinclair/typebox/value'
import { parse as parseYaml } from 'yaml'
import { DEMO_APP_SCRIPT } from '../demo-app/index.js'
import { parseDuration } from '../domain/duration.js'
import { TEMPLATE_NAME_RE } from '../domain/ids.js'
import { checkUpstreamHeader } from '../domain/upstream-headers.js'
import { peerProblems } from '../gateway/peers.js'
import type { ErrorDetail } from '../domain/errors.js'
import { ConfigSchema, type RawConfig, type RawTemplate } from './schema.js'
import type { Config, TemplateConfig } from './types.js'

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
/** The demo app beside this module's sources (src/demo-app/ in a checkout, dist/demo-app/ in the package). */
export const DEMO_APP = DEMO_APP_SCRIPT

/** Defaults, one place, units in the names or comments. */
export const DEFAULTS = {
  host: '127.0.0.1',
  port: 8080,
  dataDir: './data',
  bodyLimit: 1024 * 1024, // 1 MiB
  bodyTimeout: '30s', // API and dashboard bodies; session traffic is never timed out this way
  shutdownGrace: '10s', // in-flight requests may finish this long after SIGTERM
  poolId: 'studiopool',
  poolMaxInstances: 100,
  pgPoolSize: 10,
  pgConnectTimeout: '5s', // a new connection, or a wait for a free pooled one
  pgStatementTimeout: '10s', // Postgres' statement_timeout
  pgQueryTimeout: '15s', // the client's own limit, for a server that does not answer at all
  pgIdleInTransactionTimeout: '60s',
  workerInterval: '5s',
  orphanGrace: '10m',
  retainEnded: '7d',
  launchTokenTtl: '2m',
  cookieTtl: '12h',
  cookieName: 'studiopool_session',
  activityFlush: '5s',
  upstreamTimeout: '1h', // never under 120 s: RStudio and Jupyter long-poll
  template: {
    provider: 'local',
    minFree: 0,
    maxInstances: 10,
    idleTimeout: '30m',
    maxLifetime: '12h',
    startTimeout: '2m',
    healthPath: '/',
    pathMode: 'strip',
    hostHeader: 'target',
    whenFull: 'queue',
  },
} as const

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

/** defaults < file < env < flags. Returns a deep-frozen Config or throws ConfigError listing every problem. */
export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env
  const cwd = opts.cwd ?? process.cwd()
  let source = 'defaults and environment'
  let raw: Record<string, unknown> = {}
  let hasFile = false
  const file = opts.file ?? (existsSync(resolve(cwd, 'studiopool.yaml')) ? 'studiopool.yaml' : undefined)
  if (opts.text !== undefined || file) {
    source = opts.text !== undefined ? 'inline text' : resolve(cwd, file!)
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
    raw = withConfigDir(parsed, opts.text !== undefined ? cwd : dirname(source)) as Record<string, unknown>
    hasFile = true
  }

  const problems: ErrorDetail[] = []
  checkRenamed(raw, problems)
  // The schema's key pattern alone does not reject other keys (a record's patternProperties), so names are checked here.
  const tpl = raw.templates
  if (tpl && typeof tpl === 'object' && !Array.isArray(tpl)) {
    for (const name of Object.keys(tpl)) {
      if (!TEMPLATE_NAME_RE.test(name))
        problems.push({
          path: `/templates/${name}`,
          message: 'template names are lowercase letters, digits and "-", starting with a letter (at most 63)',
        })
    }
  }
  applyEnv(raw, env, hasFile, problems)
  const o = opts.overrides ?? {}
  if (o.host !== undefined) section(raw, 'server').host = o.host
  if (o.port !== undefined) section(raw, 'server').port = o.port
  if (o.dataDir !== undefined) section(raw, 'server').dataDir = o.dataDir
  if (o.logLevel !== undefined) section(raw, 'server').logLevel = o.logLevel

  for (const e of Value.Errors(ConfigSchema, raw)) {
    // Unions report once per branch; keep the first message per path.
    if (problems.some((p) => p.path === e.path)) continue
    problems.push({ path: e.path || '/', message: e.message })
  }
  if (problems.length) throw new ConfigError(problems, source)

  const cfg = normalize(raw as RawConfig, env, cwd, problems)
  if (problems.length) throw new ConfigError(problems, source)
  return deepFreeze(cfg)
}

function withConfigDir(v: unknown, dir: string): unknown {
  if (typeof v === 'string') return v.replaceAll('{{configDir}}', dir)
  if (Array.isArray(v)) return v.map((x) => withConfigDir(x, dir))
  if (v && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, withConfigDir(x, dir)]))
  return v
}

function section(raw: Record<string, unknown>, key: string): Record<string, unknown> {
  const v = raw[key]
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>
  const fresh: Record<string, unknown> = {}
  raw[key] = fresh
  return fresh
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

const envInt = (v: string | undefined): number | string | undefined => {
  if (v === undefined || v === '') return undefined
  return /^\d+$/.test(v) ? Number(v) : v // a non-number is left for the schema to reject with its path
}

/**
 * Environment overrides, including the seed's variables (seeds/000): MIN_FREE_INSTANCES, MAX_INSTANCES,
 * TIMEOUT_INSTANCE (ms), IMAGE_ID…, ARENA_POOL_SERVICE_KEY, PROXY_KEY, PORT, DEFAULT_URL, SERVICE_URL,
 * ROUTE_TO_REPLACE/STRING_TO_REPLACE. Documented in the README's configuration reference.
 */
function applyEnv(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  hasFile: boolean,
  problems: ErrorDetail[],
): void {
  const server = () => section(raw, 'server')
  const port = envInt(env.STUDIOPOOL_PORT ?? env.PORT)
  if (port !== undefined) server().port = port
  if (env.STUDIOPOOL_HOST) server().host = env.STUDIOPOOL_HOST
  if (env.STUDIOPOOL_PUBLIC_URL) server().publicUrl = env.STUDIOPOOL_PUBLIC_URL.replace(/\/+$/, '')
  if (env.STUDIOPOOL_INSTANCE_CALLBACK_URL)
    server().instanceCallbackUrl = env.STUDIOPOOL_INSTANCE_CALLBACK_URL.replace(/\/+$/, '')
  if (env.STUDIOPOOL_DATA_DIR) server().dataDir = env.STUDIOPOOL_DATA_DIR
  if (env.STUDIOPOOL_LOG_LEVEL) server().logLevel = env.STUDIOPOOL_LOG_LEVEL
  const dbUrl = env.STUDIOPOOL_DATABASE_URL ?? env.DATABASE_URL
  if (dbUrl) {
    if (/^postgres(ql)?:\/\//.test(dbUrl)) raw.store = { ...(raw.store as object), driver: 'postgres', url: dbUrl }
    else raw.store = { driver: 'sqlite', path: dbUrl.replace(/^sqlite:(\/\/)?/, '') }
  }
  if (env.STUDIOPOOL_AUTH) section(raw, 'auth').mode = env.STUDIOPOOL_AUTH
  if (env.STUDIOPOOL_POOL_ID) section(raw, 'pool').id = env.STUDIOPOOL_POOL_ID
  const max = envInt(env.MAX_INSTANCES)
  if (max !== undefined) section(raw, 'pool').maxInstances = max
  if (env.STUDIOPOOL_SECRET) section(raw, 'gateway').secret = env.STUDIOPOOL_SECRET
  if (env.STUDIOPOOL_SESSION_DOMAIN) {
    section(raw, 'gateway').sessionDomain = env.STUDIOPOOL_SESSION_DOMAIN
    section(raw, 'gateway').mode = 'subdomain'
  }
  if (env.DEFAULT_URL) section(raw, 'gateway').defaultUrl = env.DEFAULT_URL
  if (env.ROUTE_TO_REPLACE) section(raw, 'gateway').routeToReplace = env.ROUTE_TO_REPLACE
  if (env.STRING_TO_REPLACE) section(raw, 'gateway').stringToReplace = env.STRING_TO_REPLACE
  if (env.SERVICE_URL) section(raw, 'split').serviceUrl = env.SERVICE_URL.replace(/\/+$/, '')
  if (env.STUDIOPOOL_LOGIN) section(raw, 'dashboard').login = env.STUDIOPOOL_LOGIN

  // Seed keys become a requester key and a proxy key; the proxy key is also what a split gateway sends.
  const keys: unknown[] = Array.isArray(section(raw, 'auth').keys) ? [...(section(raw, 'auth').keys as unknown[])] : []
  if (env.ARENA_POOL_SERVICE_KEY) keys.push({ name: 'arena', role: 'requester', key: 'env:ARENA_POOL_SERVICE_KEY' })
  if (env.PROXY_KEY) {
    keys.push({ name: 'proxy', role: 'proxy', key: 'env:PROXY_KEY' })
    section(raw, 'split').proxyKey ??= 'env:PROXY_KEY'
  }
  if (env.STUDIOPOOL_ADMIN_KEY) keys.push({ name: 'admin-env', role: 'admin', key: 'env:STUDIOPOOL_ADMIN_KEY' })
  if (keys.length) section(raw, 'auth').keys = keys

  // With no file, the seed's environment alone must describe a working deployment (DESIGN.md "Configuration").
  if (!hasFile && !raw.templates) {
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
  // MIN_FREE_INSTANCES and TIMEOUT_INSTANCE apply to the default template.
  const minFree = envInt(env.MIN_FREE_INSTANCES)
  const timeout = envInt(env.TIMEOUT_INSTANCE)
  if (minFree !== undefined || timeout !== undefined) {
    const templates = raw.templates as Record<string, Record<string, unknown>> | undefined
    const def = (raw.pool as Record<string, unknown> | undefined)?.defaultTemplate as string | undefined
    const name = def ?? (templates ? Object.keys(templates)[0] : undefined)
    const t = name && templates ? templates[name] : undefined
    if (!t)
      problems.push({
        path: '/templates',
        message: 'MIN_FREE_INSTANCES/TIMEOUT_INSTANCE set but there is no default template',
      })
    else {
      if (minFree !== undefined) t.minFree = minFree
      if (timeout !== undefined) t.idleTimeout = timeout
    }
  }
}

/** The shipped demo app: runs anywhere Node runs, so `npm start` works with no R or Jupyter. */
export function demoTemplate(): RawTemplate {
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

function resolveSecret(
  value: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
  path: string,
  problems: ErrorDetail[],
): string {
  if (value.startsWith('env:')) {
    const name = value.slice(4)
    const v = env[name]
    if (!v) problems.push({ path, message: `environment variable ${name} is not set` })
    return v ?? ''
  }
  if (value.startsWith('file:')) {
    const p = resolve(cwd, value.slice(5))
    try {
      const v = readFileSync(p, 'utf8').trim()
      if (!v) problems.push({ path, message: `secret file ${p} is empty` })
      return v
    } catch (err) {
      problems.push({
        path,
        message: `cannot read secret file ${p}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      })
      return ''
    }
  }
  return value
}

function ms(v: string | number | undefined, fallback: string | number, path: string, problems: ErrorDetail[]): number {
  const d = parseDuration(v ?? fallback)
  if (d === undefined) {
    problems.push({ path, message: `not a duration: ${String(v)}` })
    return 0
  }
  return d
}

function normalize(raw: RawConfig, env: NodeJS.ProcessEnv, cwd: string, problems: ErrorDetail[]): Config {
  const s = raw.server ?? {}
  const host = s.host ?? DEFAULTS.host
  const port = s.port ?? DEFAULTS.port
  const dataDir = resolve(cwd, s.dataDir ?? DEFAULTS.dataDir)
  const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
  const publicUrl = (s.publicUrl ?? `http://${shownHost}:${port}`).replace(/\/+$/, '')

  const auth = raw.auth ?? {}
  const keys = (auth.keys ?? []).map((k, i) => ({
    name: k.name,
    role: k.role,
    key: resolveSecret(k.key, env, cwd, `/auth/keys/${i}/key`, problems),
  }))
  const names = new Set<string>()
  keys.forEach((k, i) => {
    if (names.has(k.name)) problems.push({ path: `/auth/keys/${i}/name`, message: `duplicate key name "${k.name}"` })
    names.add(k.name)
    if (k.key && k.key.length < 12)
      problems.push({ path: `/auth/keys/${i}/key`, message: 'keys must be at least 12 characters' })
  })

  const st = raw.store ?? { driver: 'sqlite' as const }
  const store: Config['store'] =
    st.driver === 'postgres'
      ? {
          driver: 'postgres',
          url: resolveSecret(st.url, env, cwd, '/store/url', problems),
          poolSize: st.poolSize ?? DEFAULTS.pgPoolSize,
          timeouts: {
            connectMs: ms(st.connectTimeout, DEFAULTS.pgConnectTimeout, '/store/connectTimeout', problems),
            statementMs: ms(st.statementTimeout, DEFAULTS.pgStatementTimeout, '/store/statementTimeout', problems),
            queryMs: ms(st.queryTimeout, DEFAULTS.pgQueryTimeout, '/store/queryTimeout', problems),
            idleInTransactionMs: ms(undefined, DEFAULTS.pgIdleInTransactionTimeout, '/store', problems),
          },
        }
      : {
          driver: 'sqlite',
          path: st.path ? (isAbsolute(st.path) ? st.path : resolve(cwd, st.path)) : resolve(dataDir, 'studiopool.db'),
        }

  const templatesRaw = raw.templates ?? {}
  const templates: TemplateConfig[] = Object.entries(templatesRaw).map(([name, t]) =>
    normalizeTemplate(name, t, problems),
  )
  if (templates.length === 0) problems.push({ path: '/templates', message: 'at least one template is needed' })
  const pool = raw.pool ?? {}
  const defaultTemplate = pool.defaultTemplate ?? templates[0]?.name ?? ''
  if (templates.length && !templates.some((t) => t.name === defaultTemplate)) {
    problems.push({ path: '/pool/defaultTemplate', message: `no template named "${defaultTemplate}"` })
  }
  const poolMax = pool.maxInstances ?? DEFAULTS.poolMaxInstances
  const totalMinFree = templates.reduce((a, t) => a + t.minFree, 0)
  if (totalMinFree > poolMax)
    problems.push({
      path: '/pool/maxInstances',
      message: `the templates' minFree add up to ${totalMinFree}, more than the pool's maxInstances ${poolMax}`,
    })

  const w = raw.worker ?? {}
  const g = raw.gateway ?? {}
  const mode = g.mode ?? 'path'
  if (mode === 'subdomain' && !g.sessionDomain)
    problems.push({ path: '/gateway/sessionDomain', message: 'subdomain mode needs gateway.sessionDomain' })
  const upstreamTimeoutMs = ms(g.upstreamTimeout, DEFAULTS.upstreamTimeout, '/gateway/upstreamTimeout', problems)
  if (upstreamTimeoutMs < 120_000)
    problems.push({ path: '/gateway/upstreamTimeout', message: 'must be at least 120s: RStudio and Jupyter long-poll' })
  if ((g.routeToReplace === undefined) !== (g.stringToReplace === undefined)) {
    problems.push({ path: '/gateway/routeToReplace', message: 'ROUTE_TO_REPLACE and STRING_TO_REPLACE go together' })
  }

  const d = raw.dashboard ?? {}
  const login = d.login ?? 'dev'
  if (login === 'oidc' && !d.oidc)
    problems.push({ path: '/dashboard/oidc', message: 'login: oidc needs dashboard.oidc' })
  if (login === 'header' && !d.header)
    problems.push({ path: '/dashboard/header', message: 'login: header needs dashboard.header with trustedProxies' })

  for (const m of peerProblems(s.trustProxy ?? [])) problems.push({ path: '/server/trustProxy', message: m })
  for (const m of peerProblems(d.header?.trustedProxies ?? []))
    problems.push({ path: '/dashboard/header/trustedProxies', message: m })

  const split = raw.split ?? {}
  return {
    server: {
      host,
      port,
      publicUrl,
      instanceCallbackUrl: (s.instanceCallbackUrl ?? split.serviceUrl ?? null)?.replace(/\/+$/, '') ?? null,
      dataDir,
      bodyLimit: s.bodyLimit ?? DEFAULTS.bodyLimit,
      bodyTimeoutMs: ms(s.bodyTimeout, DEFAULTS.bodyTimeout, '/server/bodyTimeout', problems),
      shutdownGraceMs: ms(s.shutdownGrace, DEFAULTS.shutdownGrace, '/server/shutdownGrace', problems),
      trustProxy: s.trustProxy ?? [],
      logLevel: s.logLevel ?? 'info',
    },
    auth: {
      mode: auth.mode ?? 'keys',
      keys,
      bootstrapAdmin: auth.bootstrapAdmin ?? true,
      rateLimit: auth.rateLimit ?? 0,
    },
    store,
    pool: { id: pool.id ?? DEFAULTS.poolId, maxInstances: poolMax, defaultTemplate },
    worker: {
      enabled: w.enabled ?? true,
      intervalMs: ms(w.interval, DEFAULTS.workerInterval, '/worker/interval', problems),
      orphanGraceMs: ms(w.orphanGrace, DEFAULTS.orphanGrace, '/worker/orphanGrace', problems),
      retainEndedMs: ms(w.retainEnded, DEFAULTS.retainEnded, '/worker/retainEnded', problems),
    },
    gateway: {
      mode,
      sessionDomain: g.sessionDomain ?? null,
      secret: g.secret ? resolveSecret(g.secret, env, cwd, '/gateway/secret', problems) : null,
      launchTokenTtlMs: ms(g.launchTokenTtl, DEFAULTS.launchTokenTtl, '/gateway/launchTokenTtl', problems),
      cookieTtlMs: ms(g.cookieTtl, DEFAULTS.cookieTtl, '/gateway/cookieTtl', problems),
      cookieName: g.cookieName ?? DEFAULTS.cookieName,
      adminAccess: g.adminAccess ?? false,
      defaultUrl: g.defaultUrl ?? null,
      activityFlushMs: ms(g.activityFlush, DEFAULTS.activityFlush, '/gateway/activityFlush', problems),
      upstreamTimeoutMs,
      allowedOrigins: g.allowedOrigins ?? [],
      routeToReplace: g.routeToReplace ?? null,
      stringToReplace: g.stringToReplace ?? null,
    },
    dashboard: {
      login,
      allowDevLoginFromSessions: d.allowDevLoginFromSessions ?? false,
      admins: d.admins ?? [],
      adminGroups: d.adminGroups ?? [],
      oidc: d.oidc
        ? {
            issuer: d.oidc.issuer,
            clientId: d.oidc.clientId,
            clientSecret: d.oidc.clientSecret
              ? resolveSecret(d.oidc.clientSecret, env, cwd, '/dashboard/oidc/clientSecret', problems)
              : null,
            scopes: d.oidc.scopes ?? 'openid profile email',
            groupsClaim: d.oidc.groupsClaim ?? 'groups',
            userClaim: d.oidc.userClaim ?? 'sub',
          }
        : null,
      header: d.header
        ? {
            userHeader: (d.header.userHeader ?? 'x-forwarded-user').toLowerCase(),
            groupsHeader: (d.header.groupsHeader ?? 'x-forwarded-groups').toLowerCase(),
            trustedProxies: d.header.trustedProxies,
          }
        : null,
    },
    split: {
      serviceUrl: split.serviceUrl ?? null,
      proxyKey: split.proxyKey ? resolveSecret(split.proxyKey, env, cwd, '/split/proxyKey', problems) : null,
    },
    providers: raw.providers ?? {},
    templates,
  }
}

function normalizeTemplate(name: string, t: RawTemplate, problems: ErrorDetail[]): TemplateConfig {
  const D = DEFAULTS.template
  const p = `/templates/${name}`
  const provider = t.provider ?? D.provider
  const minFree = t.minFree ?? D.minFree
  const maxInstances = t.maxInstances ?? D.maxInstances
  if (minFree > maxInstances)
    problems.push({ path: `${p}/minFree`, message: `minFree (${minFree}) is more than maxInstances (${maxInstances})` })
  const settings = (t as Record<string, unknown>)[provider]
  return {
    name,
    displayName: t.displayName ?? name,
    description: t.description ?? '',
    provider,
    minFree,
    maxInstances,
    idleTimeoutMs: ms(t.idleTimeout, D.idleTimeout, `${p}/idleTimeout`, problems),
    maxLifetimeMs: ms(t.maxLifetime, D.maxLifetime, `${p}/maxLifetime`, problems),
    startTimeoutMs: ms(t.startTimeout, D.startTimeout, `${p}/startTimeout`, problems),
    port: t.port ?? null,
    healthPath: t.healthPath ?? D.healthPath,
    pathMode: t.pathMode ?? D.pathMode,
    hostHeader: t.hostHeader ?? D.hostHeader,
    whenFull: t.whenFull ?? D.whenFull,
    allowedGroups: t.allowedGroups ?? [],
    activityIgnore: (t.activityIgnore ?? []).filter((src, i) => {
      try {
        new RegExp(src)
        return true
      } catch (err) {
        problems.push({
          path: `${p}/activityIgnore/${i}`,
          message: `not a regular expression: ${(err as Error).message}`,
        })
        return false
      }
    }),
    pricePerHour: t.pricePerHour ?? 0,
    upstreamHeaders: upstreamHeaders(t.upstreamHeaders ?? {}, `${p}/upstreamHeaders`, problems),
    settings: (settings as Record<string, unknown> | undefined) ?? {},
  }
}

function upstreamHeaders(raw: Record<string, string>, path: string, problems: ErrorDetail[]): Record<string, string> {
  const out: Record<string, string> = {}
  const seen = new Set<string>()
  for (const [name, value] of Object.entries(raw)) {
    const issues = checkUpstreamHeader(name, value)
    if (seen.has(name.toLowerCase())) issues.push(`"${name}" is given twice`)
    seen.add(name.toLowerCase())
    for (const message of issues) problems.push({ path: `${path}/${name}`, message })
    if (!issues.length) out[name] = value
  }
  return out
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o)
    for (const v of Object.values(o)) deepFreeze(v)
  }
  return o
}

/** A copy with another public URL (used when the port was 0 and is known only after listen). */
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

export function withPublicUrl(cfg: Config, publicUrl: string): Config {
  return deepFreeze({ ...cfg, server: { ...cfg.server, publicUrl } })
}
