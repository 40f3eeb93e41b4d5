import { readFileSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import type { ErrorDetail } from '../domain/errors.js'
import { checkUpstreamHeader } from '../domain/upstream-headers.js'
import { peerProblems } from '../gateway/peers.js'
import { DATA_DIR_TOKEN } from './schema.js'
import type { Config, TemplateConfig } from './types.js'

/** What the schema alone cannot do: what needs the working directory or the environment. */
export interface FinishContext {
  readonly env: NodeJS.ProcessEnv
  readonly cwd: string
}

/** A decoded configuration, still mutable (before deepFreeze). */
type Mutable<T> = { -readonly [K in keyof T]: T[K] extends object ? Mutable<T[K]> : T[K] }

/**
 * The decoded configuration with its paths made absolute (against the working directory) and its
 * secrets (`env:NAME`, `file:PATH`) resolved; every problem is pushed onto `problems`.
 */
export function finish(decoded: Config, ctx: FinishContext, problems: ErrorDetail[]): Config {
  const cfg = decoded as Mutable<Config>
  const secret = (v: string, path: string) => resolveSecret(v, ctx, path, problems)
  cfg.server.dataDir = resolve(ctx.cwd, cfg.server.dataDir)
  cfg.auth.keys = cfg.auth.keys.map((k, i) => ({ ...k, key: secret(k.key, `/auth/keys/${i}/key`) }))
  if (cfg.store.driver === 'postgres') cfg.store.url = secret(cfg.store.url, '/store/url')
  else {
    const p = cfg.store.path
    cfg.store.path = p.startsWith(`${DATA_DIR_TOKEN}/`)
      ? resolve(cfg.server.dataDir, p.slice(DATA_DIR_TOKEN.length + 1))
      : isAbsolute(p)
        ? p
        : resolve(ctx.cwd, p)
  }
  if (cfg.gateway.secret) cfg.gateway.secret = secret(cfg.gateway.secret, '/gateway/secret')
  const oidc = cfg.dashboard.oidc
  if (oidc?.clientSecret)
    cfg.dashboard.oidc = { ...oidc, clientSecret: secret(oidc.clientSecret, '/dashboard/oidc/clientSecret') }
  if (cfg.split.proxyKey) cfg.split.proxyKey = secret(cfg.split.proxyKey, '/split/proxyKey')
  return cfg as Config
}

function resolveSecret(value: string, ctx: FinishContext, path: string, problems: ErrorDetail[]): string {
  if (value.startsWith('env:')) {
    const name = value.slice(4)
    const v = ctx.env[name]
    if (!v) problems.push({ path, message: `environment variable ${name} is not set` })
    return v ?? ''
  }
  if (value.startsWith('file:')) {
    const p = resolve(ctx.cwd, value.slice(5))
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

/** The rules that span fields or sections, each with the path it is reported at. */
export function crossFieldProblems(cfg: Config): ErrorDetail[] {
  const problems: ErrorDetail[] = []
  const names = new Set<string>()
  cfg.auth.keys.forEach((k, i) => {
    if (names.has(k.name)) problems.push({ path: `/auth/keys/${i}/name`, message: `duplicate key name "${k.name}"` })
    names.add(k.name)
    if (k.key && k.key.length < 12)
      problems.push({ path: `/auth/keys/${i}/key`, message: 'keys must be at least 12 characters' })
  })
  for (const t of cfg.templates) problems.push(...templateProblems(t))
  const templates = cfg.templates
  if (templates.length === 0) problems.push({ path: '/templates', message: 'at least one template is needed' })
  const { defaultTemplate, maxInstances: poolMax } = cfg.pool
  if (templates.length && !templates.some((t) => t.name === defaultTemplate)) {
    problems.push({ path: '/pool/defaultTemplate', message: `no template named "${defaultTemplate}"` })
  }
  const totalMinFree = templates.reduce((a, t) => a + t.minFree, 0)
  if (totalMinFree > poolMax)
    problems.push({
      path: '/pool/maxInstances',
      message: `the templates' minFree add up to ${totalMinFree}, more than the pool's maxInstances ${poolMax}`,
    })
  const g = cfg.gateway
  if (g.mode === 'subdomain' && !g.sessionDomain)
    problems.push({ path: '/gateway/sessionDomain', message: 'subdomain mode needs gateway.sessionDomain' })
  if (g.upstreamTimeoutMs < 120_000)
    problems.push({ path: '/gateway/upstreamTimeout', message: 'must be at least 120s: RStudio and Jupyter long-poll' })
  if ((g.routeToReplace === null) !== (g.stringToReplace === null)) {
    problems.push({ path: '/gateway/routeToReplace', message: 'ROUTE_TO_REPLACE and STRING_TO_REPLACE go together' })
  }
  const d = cfg.dashboard
  if (d.login === 'oidc' && !d.oidc)
    problems.push({ path: '/dashboard/oidc', message: 'login: oidc needs dashboard.oidc' })
  if (d.login === 'header' && !d.header)
    problems.push({ path: '/dashboard/header', message: 'login: header needs dashboard.header with trustedProxies' })
  for (const m of peerProblems(cfg.server.trustProxy)) problems.push({ path: '/server/trustProxy', message: m })
  for (const m of peerProblems(d.header?.trustedProxies ?? []))
    problems.push({ path: '/dashboard/header/trustedProxies', message: m })
  return problems
}

function templateProblems(t: TemplateConfig): ErrorDetail[] {
  const problems: ErrorDetail[] = []
  const p = `/templates/${t.name}`
  if (t.minFree > t.maxInstances)
    problems.push({
      path: `${p}/minFree`,
      message: `minFree (${t.minFree}) is more than maxInstances (${t.maxInstances})`,
    })
  t.activityIgnore.forEach((src, i) => {
    try {
      new RegExp(src)
    } catch (err) {
      problems.push({
        path: `${p}/activityIgnore/${i}`,
        message: `not a regular expression: ${(err as Error).message}`,
      })
    }
  })
  const seen = new Set<string>()
  for (const [name, value] of Object.entries(t.upstreamHeaders ?? {})) {
    const issues = checkUpstreamHeader(name, value)
    if (seen.has(name.toLowerCase())) issues.push(`"${name}" is given twice`)
    seen.add(name.toLowerCase())
    for (const message of issues) problems.push({ path: `${p}/upstreamHeaders/${name}`, message })
  }
  return problems
}
