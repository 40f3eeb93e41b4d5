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

/**
 * Environment overrides, including the seed's variables (seeds/000): MIN_FREE_INSTANCES, MAX_INSTANCES,
 * TIMEOUT_INSTANCE (ms), IMAGE_ID…, ARENA_POOL_SERVICE_KEY, PROXY_KEY, PORT, DEFAULT_URL, SERVICE_URL,
 * ROUTE_TO_REPLACE/STRING_TO_REPLACE. Documented in the README's configuration reference.
 */
export function applyEnv(
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

  if (!hasFile && !raw.templates) seedTemplates(raw, env, max)
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
