import { readFileSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import type { ErrorDetail } from '../domain/errors.js'
import { isTimeZone } from '../schedule/schedule.js'
import { checkUpstreamHeader } from '../domain/upstream-headers.js'
import { peerProblems } from '../gateway/peers.js'
import { parsePriceTable } from '../cost/price-table.js'
import { DATA_DIR_TOKEN } from './schema.js'
import type { Config, TemplateConfig } from './types.js'
import { hookProblems } from './hook-checks.js'

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
  cfg.webhooks = cfg.webhooks.map((w, i) => ({ ...w, secret: secret(w.secret, `/webhooks/${i}/secret`) }))
  cfg.hooks = cfg.hooks.map((h, i) => ({
    ...h,
    env: Object.fromEntries(Object.entries(h.env).map(([k, v]) => [k, secret(v, `/hooks/${i}/env/${k}`)])),
  }))
  problems.push(...hookProblems(cfg as Config, ctx))
  if (cfg.split.proxyKey) cfg.split.proxyKey = secret(cfg.split.proxyKey, '/split/proxyKey')
  finishCost(cfg as Config, ctx, problems)
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
  const hooks = new Set<string>()
  cfg.webhooks.forEach((w, i) => {
    if (hooks.has(w.name)) problems.push({ path: `/webhooks/${i}/name`, message: `duplicate webhook name "${w.name}"` })
    hooks.add(w.name)
  })
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
  problems.push(...scheduleProblems(t, p))
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
  problems.push(...sharedProblems(t, p))
  const seen = new Set<string>()
  for (const [name, value] of Object.entries(t.upstreamHeaders ?? {})) {
    const issues = checkUpstreamHeader(name, value)
    if (seen.has(name.toLowerCase())) issues.push(`"${name}" is given twice`)
    seen.add(name.toLowerCase())
    for (const message of issues) problems.push({ path: `${p}/upstreamHeaders/${name}`, message })
  }
  return problems
}

/** The price table read and parsed (docs/cost.md "Prices"); budgets in the pool's one currency. */
function finishCost(cfg: Config, ctx: FinishContext, problems: ErrorDetail[]): void {
  const pt = cfg.cost.priceTable
  if (pt) {
    const p = resolve(ctx.cwd, pt.path)
    try {
      const table = parsePriceTable(readFileSync(p, 'utf8'), pt)
      ;(cfg.cost as { table: Record<string, unknown> }).table = Object.fromEntries(table)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      problems.push({ path: '/cost/priceTable/path', message: `cannot use price table ${p}: ${e.code ?? e.message}` })
    }
  }
  cfg.budgets.forEach((b, i) => {
    if (b.currency !== null && b.currency !== cfg.cost.currency)
      problems.push({
        path: `/budgets/${i}/currency`,
        message: `must be cost.currency (${cfg.cost.currency}); no conversion is done`,
      })
    if (
      b.scope !== 'pool' &&
      b.name !== null &&
      b.scope === 'template' &&
      !cfg.templates.some((t) => t.name === b.name)
    )
      problems.push({ path: `/budgets/${i}/name`, message: `no template "${b.name}"` })
    if (b.stopGraceMs !== null && b.mode !== 'hard')
      problems.push({ path: `/budgets/${i}/stopRunning`, message: 'only a hard budget stops running sessions' })
    if (b.period.kind === 'rolling' && b.period.ms <= 0)
      problems.push({ path: `/budgets/${i}/period`, message: 'must be longer than 0' })
  })
}

/** A schedule's and a warm pool's rules: a zone Intl knows, floors within caps. */
function scheduleProblems(t: TemplateConfig, p: string): ErrorDetail[] {
  const problems: ErrorDetail[] = []
  const s = t.schedule
  if (s) {
    if (!isTimeZone(s.timezone))
      problems.push({
        path: `${p}/schedule/timezone`,
        message: `not a time zone: "${s.timezone}" (an IANA name, e.g. Europe/Berlin)`,
      })
    s.windows.forEach((w, i) => {
      if (w.fromMin === w.toMin)
        problems.push({
          path: `${p}/schedule/windows/${i}`,
          message: 'from and to are the same time; use 00:00–24:00 for a whole day',
        })
      if (w.minFree > w.maxInstances)
        problems.push({
          path: `${p}/schedule/windows/${i}/minFree`,
          message: `minFree (${w.minFree}) is more than maxInstances (${w.maxInstances})`,
        })
    })
    if (s.outside !== 'unavailable' && s.outside.minFree > s.outside.maxInstances)
      problems.push({
        path: `${p}/schedule/outside/minFree`,
        message: `minFree (${s.outside.minFree}) is more than maxInstances (${s.outside.maxInstances})`,
      })
  }
  const w = t.warmPool
  if (w) {
    if (w.min > w.max)
      problems.push({ path: `${p}/warmPool/min`, message: `min (${w.min}) is more than max (${w.max})` })
    if (w.timezone !== undefined && !isTimeZone(w.timezone))
      problems.push({ path: `${p}/warmPool/timezone`, message: `not a time zone: "${w.timezone}"` })
  }
  return problems
}

/** A `mode: shared` template (issue 14): its own bounds replace the warm pool; it has no per-user app token. */
function sharedProblems(t: TemplateConfig, p: string): ErrorDetail[] {
  const s = t.shared
  if (!s) return []
  const problems: ErrorDetail[] = []
  if (s.minInstances > t.maxInstances)
    problems.push({
      path: `${p}/minInstances`,
      message: `minInstances (${s.minInstances}) is more than maxInstances (${t.maxInstances})`,
    })
  if (t.minFree > 0)
    problems.push({
      path: `${p}/minFree`,
      message: 'a shared template keeps minInstances running, not a warm pool: remove minFree',
    })
  if (Object.keys(t.upstreamHeaders ?? {}).length > 0)
    problems.push({
      path: `${p}/upstreamHeaders`,
      message: 'a shared template serves many users, so it has no per-user app token header',
    })
  return problems
}
