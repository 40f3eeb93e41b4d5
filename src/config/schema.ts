import { Webhooks } from './webhooks-schema.js'
import { Hooks } from './hooks-schema.js'
import { Type } from '@sinclair/typebox'
import { DEFAULTS, noEncode, Secret, Section, StrList } from './schema-parts.js'
import { Dashboard, Gateway, Widget } from './edge-schema.js'
import { parseDuration } from '../domain/duration.js'
import { Duration } from './duration-schema.js'
import { KEY_ROLES } from '../domain/keys.js'
import { SharedKeys, sharedSettings, type SharedKeyValues } from './shared-schema.js'
import { KEY_NAME_PATTERN, TEMPLATE_NAME_PATTERN } from '../domain/ids.js'
import { Budgets, Cost, decodeTemplateCost, TemplatePrice, TemplateResources } from './cost-schema.js'
import type { Schedule } from '../schedule/schedule.js'
import { decodeSchedule, decodeWarmPool, ScheduleSchema, WarmPoolSchema } from './schedule-schema.js'

/**
 * The one schema of the configuration file (`studiopool.yaml`), and the one source of `Config`
 * (config/types.ts derives it with `StaticDecode`). Each field carries its default; each section
 * decodes (a TypeBox transform) into its normalized shape: durations become milliseconds in
 * `…Ms` fields, absent optional values `null`, templates a list in file order.
 * Durations accept `90s`, `30m`, `12h` or a number of milliseconds; secrets accept a literal,
 * `env:NAME` or `file:PATH` (resolved by config/finish.ts, which needs the environment).
 * `load.ts` applies the defaults, validates, decodes, then finishes and checks (config/finish.ts).
 */

export { DEFAULTS }

/** `{{dataDir}}` in `store.path` stands for `server.dataDir` (the default puts the database there). */
export const DATA_DIR_TOKEN = '{{dataDir}}'

const trimSlashes = (u: string) => u.replace(/\/+$/, '')

const D = DEFAULTS.template

export const TemplateSchema = Type.Object(
  {
    displayName: Type.Optional(Type.String({ maxLength: 100 })),
    description: Type.String({ maxLength: 1000, default: '' }),
    provider: Type.String({ minLength: 1, default: D.provider }),
    /** `auto`: the predictive warm pool with its defaults (`warmPool: {mode: predictive}`). */
    minFree: Type.Union([Type.Integer({ minimum: 0, maximum: 10_000 }), Type.Literal('auto')], { default: D.minFree }),
    maxInstances: Type.Integer({ minimum: 1, maximum: 100_000, default: D.maxInstances }),
    /** Windows that set minFree, the cap and availability (docs/cost.md "Schedules"). */
    schedule: Type.Optional(ScheduleSchema),
    /** The predictive warm pool (docs/cost.md "Predictive warm pool"). */
    warmPool: Type.Optional(WarmPoolSchema),
    /** 0 = never. */
    idleTimeout: Duration(D.idleTimeout),
    /** 0 = never. */
    maxLifetime: Duration(D.maxLifetime),
    startTimeout: Duration(D.startTimeout),
    /** The app's port inside the instance (remote providers); local picks a free port. */
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    /** Probed until the app answers; `{{basePath}}` stands for the instance's `/s/<id>/` (apps that keep the prefix). */
    healthPath: Type.String({
      pattern: '^(/|\\{\\{basePath\\}\\})',
      default: D.healthPath,
      description: 'a path starting with / or {{basePath}}',
    }),
    pathMode: Type.Union([Type.Literal('strip'), Type.Literal('keep')], { default: D.pathMode }),
    /** `target`: Host is the target's (the seed's changeOrigin); `preserve`: the client's Host is passed on. */
    hostHeader: Type.Union([Type.Literal('target'), Type.Literal('preserve')], { default: D.hostHeader }),
    whenFull: Type.Union([Type.Literal('queue'), Type.Literal('reject')], { default: D.whenFull }),
    /** Empty = everybody. */
    allowedGroups: StrList,
    /** Request paths (regex sources, relative to the session root) that are keep-alive polling, not activity. */
    activityIgnore: Type.Array(Type.String({ minLength: 1, maxLength: 500 }), { maxItems: 50, default: [] }),
    /** The on-demand price per hour (older spelling of `price.onDemandPerHour`, which wins when both are set). */
    pricePerHour: Type.Number({ minimum: 0, default: 0 }),
    price: TemplatePrice,
    resources: TemplateResources,
    /**
     * The gateway injects the warning banner (time left before an idle, lifetime, budget or schedule
     * stop; Keep working, Stop, Suspend) into this template's HTML pages (docs/widget.md).
     */
    injectWidget: Type.Boolean({ default: false }),
    ...SharedKeys,
    /**
     * Header fields the gateway sends on every upstream request and WebSocket upgrade of this
     * template's instances (`Authorization: 'token {{appToken}}'`); tokens `{{appToken}}`, `{{user}}`,
     * `{{instanceId}}` (domain/upstream-headers.ts). Client-sent fields of the same names are dropped.
     * Checked in config/finish.ts.
     */
    upstreamHeaders: Type.Record(Type.String(), Type.String(), { maxProperties: 20, default: {} }),
    /** Provider-specific settings; validated by the provider. */
    local: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    ec2: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    fake: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    docker: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    slurm: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    kubernetes: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  // A default on the value schema makes Value.Default visit each template of the record.
  { additionalProperties: false, default: {} },
)

/** Templates keyed by name in the file; decoded to a list in file order, each with its name and its provider's settings. */
const Templates = Type.Transform(
  Type.Record(Type.String({ pattern: TEMPLATE_NAME_PATTERN }), TemplateSchema, { default: {} }),
)
  .Decode((templates) =>
    Object.entries(templates).map(([name, t]) => ({
      name,
      displayName: t.displayName ?? name,
      description: t.description,
      provider: t.provider,
      /** The static floor; `auto` reads as 0 here, the predictive policy (`warmPool`) sets the rest. */
      minFree: t.minFree === 'auto' ? 0 : t.minFree,
      maxInstances: t.maxInstances,
      schedule: t.schedule
        ? decodeSchedule(t.schedule, t.minFree === 'auto' ? 0 : t.minFree, t.maxInstances)
        : (null as Schedule | null),
      warmPool: decodeWarmPool(t.warmPool, t.minFree === 'auto', t.maxInstances, t.schedule),
      idleTimeoutMs: t.idleTimeout,
      maxLifetimeMs: t.maxLifetime,
      startTimeoutMs: t.startTimeout,
      port: t.port ?? null,
      healthPath: t.healthPath,
      pathMode: t.pathMode,
      hostHeader: t.hostHeader,
      whenFull: t.whenFull,
      allowedGroups: t.allowedGroups,
      activityIgnore: t.activityIgnore,
      pricePerHour: t.pricePerHour,
      injectWidget: t.injectWidget,
      ...decodeTemplateCost(t),
      upstreamHeaders: t.upstreamHeaders,
      /** `mode: shared` (issue 14): its settings; null for a dedicated template. */
      shared: sharedSettings(t as SharedKeyValues),
      /** The provider's own per-template settings (validated by the provider's schema). */
      settings: ((t as Record<string, unknown>)[t.provider] as Record<string, unknown> | undefined) ?? {},
    })),
  )
  .Encode(noEncode)

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
const ACCESS_LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'off'] as const

const Server = Type.Transform(
  Section({
    host: Type.String({ minLength: 1, default: DEFAULTS.host }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: DEFAULTS.port }),
    /** Base URL users reach us at, e.g. `https://sessions.example.org`, maybe with a path (`basePath` below). Default: the listen address. */
    publicUrl: Type.Optional(
      Type.String({
        pattern: "^https?://[^/?#]+(/[A-Za-z0-9._~%!$&'()*+,;=:@-]+)*/?$",
        description:
          'an http(s) URL, optionally with a path but without query or fragment, e.g. https://sessions.example.org or https://portal.example.org/studiopool/',
      }),
    ),
    /** Base URL instances on other machines (ec2) post progress to; default SERVICE_URL, else publicUrl. */
    instanceCallbackUrl: Type.Optional(
      Type.String({ pattern: '^https?://[^/?#]+(/[^?#]*)?$', description: 'an http(s) URL without query or fragment' }),
    ),
    /** Relative to the working directory (config/finish.ts). */
    dataDir: Type.String({ minLength: 1, default: DEFAULTS.dataDir }),
    /** Maximum request body, bytes. */
    bodyLimit: Type.Integer({ minimum: 1024, maximum: 100 * 1024 * 1024, default: DEFAULTS.bodyLimit }),
    /** API and dashboard requests must have sent their whole body within this long (0 = no limit); else 408. Sessions are exempt. */
    bodyTimeout: Duration(DEFAULTS.bodyTimeout),
    /** On SIGTERM, how long in-flight requests may take to finish before they are cut. */
    shutdownGrace: Duration(DEFAULTS.shutdownGrace),
    /** Addresses whose X-Forwarded-* headers we trust. */
    trustProxy: StrList,
    logLevel: Type.Union(
      LOG_LEVELS.map((l) => Type.Literal(l)),
      { default: 'info' },
    ),
    /** The level of the access log (one line per API, dashboard and gateway request, with its request id); `off` = none. */
    accessLog: Type.Union(
      ACCESS_LOG_LEVELS.map((l) => Type.Literal(l)),
      { default: 'info' },
    ),
  }),
)
  .Decode((s) => {
    const shownHost =
      s.host === '0.0.0.0' || s.host === '::' ? '127.0.0.1' : s.host.includes(':') ? `[${s.host}]` : s.host
    return {
      host: s.host,
      port: s.port,
      publicUrl: trimSlashes(s.publicUrl ?? `http://${shownHost}:${s.port}`),
      /** publicUrl's path without the trailing slash (`/studiopool`) or ''; derived once, here (gateway/base-path.ts). */
      basePath: s.publicUrl ? trimSlashes(new URL(s.publicUrl).pathname) : '',
      /**
       * Base URL that instances post progress to (`…/api/v1/instances/<id>/progress`) when it is not
       * `publicUrl`: `server.instanceCallbackUrl`, else `SERVICE_URL`/`split.serviceUrl` (filled in by the
       * root); null = publicUrl. See instanceCallbackBase() in config/load.ts.
       */
      instanceCallbackUrl: s.instanceCallbackUrl ?? (null as string | null),
      dataDir: s.dataDir,
      bodyLimit: s.bodyLimit,
      bodyTimeoutMs: s.bodyTimeout,
      shutdownGraceMs: s.shutdownGrace,
      trustProxy: s.trustProxy,
      logLevel: s.logLevel as string,
      accessLog: s.accessLog,
    }
  })
  .Encode(noEncode)

const Auth = Type.Transform(
  Section({
    mode: Type.Union([Type.Literal('keys'), Type.Literal('none')], { default: 'keys' }),
    /** Static keys from config / seed env (ARENA_POOL_SERVICE_KEY, PROXY_KEY). Secrets resolved by finish.ts. */
    keys: Type.Array(
      Type.Object(
        {
          name: Type.String({ pattern: KEY_NAME_PATTERN }),
          role: Type.Union(KEY_ROLES.map((r) => Type.Literal(r))),
          key: Secret,
        },
        { additionalProperties: false },
      ),
      { default: [] },
    ),
    /** Create and print an admin key on first start when no admin key exists. */
    bootstrapAdmin: Type.Boolean({ default: true }),
    rateLimit: Type.Integer({
      minimum: 0,
      maximum: 1_000_000,
      default: 0,
      description: 'requests per second per requester key (burst: twice that); 0 = off',
    }),
  }),
)
  .Decode((a) => ({
    mode: a.mode,
    keys: a.keys.map((k) => ({ name: k.name, role: k.role as (typeof KEY_ROLES)[number], key: k.key })),
    bootstrapAdmin: a.bootstrapAdmin,
    /** Requests per second per requester key (burst twice that); 0 = off. Admin and proxy keys are not limited. */
    rateLimit: a.rateLimit,
  }))
  .Encode(noEncode)

const Store = Type.Transform(
  Type.Union(
    [
      Type.Object(
        {
          driver: Type.Literal('sqlite'),
          /** Relative to the working directory; by default `studiopool.db` in `server.dataDir`. */
          path: Type.String({ minLength: 1, default: `${DATA_DIR_TOKEN}/studiopool.db` }),
        },
        { additionalProperties: false },
      ),
      Type.Object(
        {
          driver: Type.Literal('postgres'),
          url: Secret,
          poolSize: Type.Integer({ minimum: 1, maximum: 200, default: DEFAULTS.pgPoolSize }),
          connectTimeout: Duration(DEFAULTS.pgConnectTimeout),
          statementTimeout: Duration(DEFAULTS.pgStatementTimeout),
          queryTimeout: Duration(DEFAULTS.pgQueryTimeout),
        },
        { additionalProperties: false },
      ),
    ],
    { default: { driver: 'sqlite' } },
  ),
)
  .Decode((st) =>
    st.driver === 'postgres'
      ? {
          driver: st.driver,
          url: st.url,
          poolSize: st.poolSize,
          /** ms: connect (and wait for a pooled connection), server statement_timeout, client read timeout, idle in transaction. */
          timeouts: {
            connectMs: st.connectTimeout,
            statementMs: st.statementTimeout,
            queryMs: st.queryTimeout,
            idleInTransactionMs: parseDuration(DEFAULTS.pgIdleInTransactionTimeout)!,
          },
        }
      : { driver: st.driver, path: st.path },
  )
  .Encode(noEncode)

const Pool = Section({
  /** Tag value put on every provider resource; identifies this pool for recovery and orphan reaping. */
  id: Type.String({
    pattern: '^[a-z0-9][a-z0-9-]{0,62}$',
    default: DEFAULTS.poolId,
    description: 'lowercase letters, digits and "-", at most 63',
  }),
  /** Pool-wide cap over all templates (active instances). */
  maxInstances: Type.Integer({ minimum: 1, maximum: 1_000_000, default: DEFAULTS.poolMaxInstances }),
  /** Default: the first template (the root fills it in). */
  defaultTemplate: Type.Optional(Type.String({ minLength: 1 })),
})

const Worker = Type.Transform(
  Section({
    enabled: Type.Boolean({ default: true }),
    interval: Duration(DEFAULTS.workerInterval),
    orphanGrace: Duration(DEFAULTS.orphanGrace),
    /** How long a terminated/failed instance row is kept before it is purged (history stays). */
    retainEnded: Duration(DEFAULTS.retainEnded),
  }),
)
  .Decode((w) => ({
    enabled: w.enabled,
    intervalMs: w.interval,
    orphanGraceMs: w.orphanGrace,
    retainEndedMs: w.retainEnded,
  }))
  .Encode(noEncode)

/** Several replicas on one Postgres (issue 16, docs/ha.md). */
const Ha = Type.Transform(
  Section({
    /** How often a standby replica tries the worker leader lock, and the leader renews it. */
    leaderPoll: Duration(DEFAULTS.leaderPoll),
    /** How long a leader that stopped answering (frozen, cut off from Postgres) keeps the lock: ≥ 2 × leaderPoll. */
    leaderTimeout: Duration(DEFAULTS.leaderTimeout),
    /** Full route resync from the store while LISTEN/NOTIFY works (every second without it). */
    routeResync: Duration(DEFAULTS.routeResync),
    /** false: a starting replica applies no migration and refuses to start while one is pending (`studiopool migrate` applies them). */
    autoMigrate: Type.Boolean({ default: true }),
  }),
)
  .Decode((h) => ({
    leaderPollMs: h.leaderPoll,
    leaderTimeoutMs: Math.max(h.leaderTimeout, 2 * h.leaderPoll),
    routeResyncMs: h.routeResync,
    autoMigrate: h.autoMigrate,
  }))
  .Encode(noEncode)

/** Split mode: where the API lives, and the key the gateway/worker uses. */
const Split = Type.Transform(
  Section({
    serviceUrl: Type.Optional(Type.String({ pattern: '^https?://', description: 'an http(s) URL' })),
    proxyKey: Type.Optional(Secret),
  }),
)
  .Decode((s) => ({
    serviceUrl: s.serviceUrl ?? (null as string | null),
    proxyKey: s.proxyKey ?? (null as string | null),
  }))
  .Encode(noEncode)

export const ConfigSchema = Type.Transform(
  Type.Object(
    {
      server: Server,
      auth: Auth,
      store: Store,
      pool: Pool,
      worker: Worker,
      gateway: Gateway,
      widget: Widget,
      dashboard: Dashboard,
      split: Split,
      ha: Ha,
      /** Provider-wide settings, keyed by provider name. */
      providers: Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown()), { default: {} }),
      /** Templates in file order; `pool.defaultTemplate` is the first unless set. */
      templates: Templates,
      /** docs/cost.md: currency, price table, rates per CPU-hour and GiB-hour, groups for attribution. */
      cost: Cost,
      /** docs/cost.md "Budgets". */
      budgets: Budgets,
      webhooks: Webhooks,
      /** docs/hooks.md: operator commands on lifecycle events. */
      hooks: Hooks,
    },
    { additionalProperties: false },
  ),
)
  // The fields whose defaults come from another section.
  .Decode((c) => ({
    ...c,
    server: {
      ...c.server,
      instanceCallbackUrl: (c.server.instanceCallbackUrl ?? c.split.serviceUrl)?.replace(/\/+$/, '') ?? null,
    },
    pool: {
      id: c.pool.id,
      maxInstances: c.pool.maxInstances,
      defaultTemplate: c.pool.defaultTemplate ?? c.templates[0]?.name ?? '',
    },
  }))
  .Encode(noEncode)
