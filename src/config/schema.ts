import { Type, type TSchema } from '@sinclair/typebox'
import { parseDuration } from '../domain/duration.js'
import { KEY_ROLES } from '../domain/keys.js'
import { KEY_NAME_PATTERN, TEMPLATE_NAME_PATTERN } from '../domain/ids.js'

/**
 * The one schema of the configuration file (`studiopool.yaml`), and the one source of `Config`
 * (config/types.ts derives it with `StaticDecode`). Each field carries its default; each section
 * decodes (a TypeBox transform) into its normalized shape: durations become milliseconds in
 * `…Ms` fields, absent optional values `null`, templates a list in file order.
 * Durations accept `90s`, `30m`, `12h` or a number of milliseconds; secrets accept a literal,
 * `env:NAME` or `file:PATH` (resolved by config/finish.ts, which needs the environment).
 * `load.ts` applies the defaults, validates, decodes, then finishes and checks (config/finish.ts).
 */

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

/** `{{dataDir}}` in `store.path` stands for `server.dataDir` (the default puts the database there). */
export const DATA_DIR_TOKEN = '{{dataDir}}'

const DURATION_PATTERN = '^\\s*\\d+(\\.\\d+)?\\s*(ms|s|m|h|d)?\\s*$'

/** A duration (`90s`, `30m`, `12h`, `1d`, or milliseconds), decoded to milliseconds. */
const Duration = (fallback: string) =>
  Type.Transform(
    Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: DURATION_PATTERN })], {
      description: 'a duration: 90s, 30m, 12h, 1d, or milliseconds',
      default: fallback,
    }),
  )
    .Decode((v) => parseDuration(v) ?? 0) // the pattern admits only what parseDuration reads
    .Encode((ms) => ms)
const Secret = Type.String({ minLength: 1, description: 'a secret: literal, env:NAME or file:PATH' })
const StrList = Type.Array(Type.String({ minLength: 1 }), { default: [] })
/** An object section: strict keys, `{}` when absent (so that its fields' defaults apply). */
const Section = <P extends Record<string, TSchema>>(properties: P) =>
  Type.Object(properties, { additionalProperties: false, default: {} })
const trimSlashes = (u: string) => u.replace(/\/+$/, '')

const D = DEFAULTS.template
export const TemplateSchema = Type.Object(
  {
    displayName: Type.Optional(Type.String({ maxLength: 100 })),
    description: Type.String({ maxLength: 1000, default: '' }),
    provider: Type.String({ minLength: 1, default: D.provider }),
    minFree: Type.Integer({ minimum: 0, maximum: 10_000, default: D.minFree }),
    maxInstances: Type.Integer({ minimum: 1, maximum: 100_000, default: D.maxInstances }),
    /** 0 = never. */
    idleTimeout: Duration(D.idleTimeout),
    /** 0 = never. */
    maxLifetime: Duration(D.maxLifetime),
    startTimeout: Duration(D.startTimeout),
    /** The app's port inside the instance (remote providers); local picks a free port. */
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    /** Probed until the app answers; `{{basePath}}` stands for the instance's `/s/<id>/` (apps that keep the prefix). */
    healthPath: Type.String({ pattern: '^(/|\\{\\{basePath\\}\\})', default: D.healthPath }),
    pathMode: Type.Union([Type.Literal('strip'), Type.Literal('keep')], { default: D.pathMode }),
    /** `target`: Host is the target's (the seed's changeOrigin); `preserve`: the client's Host is passed on. */
    hostHeader: Type.Union([Type.Literal('target'), Type.Literal('preserve')], { default: D.hostHeader }),
    whenFull: Type.Union([Type.Literal('queue'), Type.Literal('reject')], { default: D.whenFull }),
    /** Empty = everybody. */
    allowedGroups: StrList,
    /** Request paths (regex sources, relative to the session root) that are keep-alive polling, not activity. */
    activityIgnore: Type.Array(Type.String({ minLength: 1, maxLength: 500 }), { maxItems: 50, default: [] }),
    pricePerHour: Type.Number({ minimum: 0, default: 0 }),
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
      minFree: t.minFree,
      maxInstances: t.maxInstances,
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
      upstreamHeaders: t.upstreamHeaders,
      /** The provider's own per-template settings (validated by the provider's schema). */
      settings: ((t as Record<string, unknown>)[t.provider] as Record<string, unknown> | undefined) ?? {},
    })),
  )
  .Encode(noEncode)

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

const Server = Type.Transform(
  Section({
    host: Type.String({ minLength: 1, default: DEFAULTS.host }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: DEFAULTS.port }),
    /** Base URL users reach the gateway at, e.g. `https://sessions.example.org`; used for launch links. Default: the listen address. */
    publicUrl: Type.Optional(Type.String({ pattern: '^https?://[^/]+$' })),
    /** Base URL instances on other machines (ec2) post progress to; default SERVICE_URL, else publicUrl. */
    instanceCallbackUrl: Type.Optional(Type.String({ pattern: '^https?://[^/?#]+(/[^?#]*)?$' })),
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
  }),
)
  .Decode((s) => {
    const shownHost =
      s.host === '0.0.0.0' || s.host === '::' ? '127.0.0.1' : s.host.includes(':') ? `[${s.host}]` : s.host
    return {
      host: s.host,
      port: s.port,
      publicUrl: trimSlashes(s.publicUrl ?? `http://${shownHost}:${s.port}`),
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
  id: Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,62}$', default: DEFAULTS.poolId }),
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

const Gateway = Type.Transform(
  Section({
    mode: Type.Union([Type.Literal('path'), Type.Literal('subdomain')], { default: 'path' }),
    sessionDomain: Type.Optional(Type.String({ pattern: '^[a-z0-9.-]+(:\\d+)?$' })),
    /** Secret for launch tokens and cookies; absent = generated once and kept in the store (shared by replicas). */
    secret: Type.Optional(Secret),
    launchTokenTtl: Duration(DEFAULTS.launchTokenTtl),
    cookieTtl: Duration(DEFAULTS.cookieTtl),
    cookieName: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$', default: DEFAULTS.cookieName }),
    adminAccess: Type.Boolean({ default: false }),
    defaultUrl: Type.Optional(Type.String({ pattern: '^https?://' })),
    activityFlush: Duration(DEFAULTS.activityFlush),
    upstreamTimeout: Duration(DEFAULTS.upstreamTimeout),
    /** Extra origins allowed on WebSocket upgrades, besides the gateway's own. */
    allowedOrigins: StrList,
    /** Seed proxy compatibility: ROUTE_TO_REPLACE / STRING_TO_REPLACE. */
    routeToReplace: Type.Optional(Type.String()),
    stringToReplace: Type.Optional(Type.String()),
  }),
)
  .Decode((g) => ({
    mode: g.mode,
    sessionDomain: g.sessionDomain ?? null,
    secret: g.secret ?? null,
    launchTokenTtlMs: g.launchTokenTtl,
    cookieTtlMs: g.cookieTtl,
    cookieName: g.cookieName,
    adminAccess: g.adminAccess,
    defaultUrl: g.defaultUrl ?? null,
    activityFlushMs: g.activityFlush,
    upstreamTimeoutMs: g.upstreamTimeout,
    allowedOrigins: g.allowedOrigins,
    routeToReplace: g.routeToReplace ?? null,
    stringToReplace: g.stringToReplace ?? null,
  }))
  .Encode(noEncode)

const Dashboard = Type.Transform(
  Section({
    /** As configured; the login actually offered is decided at start (web/login-policy.ts) and may be `off`. */
    login: Type.Union([Type.Literal('dev'), Type.Literal('oidc'), Type.Literal('header'), Type.Literal('off')], {
      default: 'dev',
    }),
    /**
     * Dev login is refused while a provider reports that sessions reach this machine's loopback
     * listeners; `true` allows it anyway (one person on a laptop, whose sessions are theirs). Never
     * allows it behind a proxy or on a non-loopback public URL.
     */
    allowDevLoginFromSessions: Type.Boolean({ default: false }),
    admins: StrList,
    adminGroups: StrList,
    oidc: Type.Optional(
      Type.Object(
        {
          issuer: Type.String({ pattern: '^https?://' }),
          clientId: Type.String({ minLength: 1 }),
          clientSecret: Type.Optional(Secret),
          scopes: Type.String({ default: 'openid profile email' }),
          groupsClaim: Type.String({ default: 'groups' }),
          userClaim: Type.String({ default: 'sub' }),
        },
        { additionalProperties: false },
      ),
    ),
    header: Type.Optional(
      Type.Object(
        {
          userHeader: Type.String({ default: 'x-forwarded-user' }),
          groupsHeader: Type.String({ default: 'x-forwarded-groups' }),
          trustedProxies: Type.Array(Type.String({ minLength: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
  }),
)
  .Decode((d) => ({
    login: d.login,
    allowDevLoginFromSessions: d.allowDevLoginFromSessions,
    admins: d.admins,
    adminGroups: d.adminGroups,
    oidc: d.oidc ? { ...d.oidc, clientSecret: d.oidc.clientSecret ?? (null as string | null) } : null,
    header: d.header
      ? {
          userHeader: d.header.userHeader.toLowerCase(),
          groupsHeader: d.header.groupsHeader.toLowerCase(),
          trustedProxies: d.header.trustedProxies,
        }
      : null,
  }))
  .Encode(noEncode)

/** Split mode: where the API lives, and the key the gateway/worker uses. */
const Split = Type.Transform(
  Section({
    serviceUrl: Type.Optional(Type.String({ pattern: '^https?://' })),
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
      dashboard: Dashboard,
      split: Split,
      /** Provider-wide settings, keyed by provider name. */
      providers: Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown()), { default: {} }),
      /** Templates in file order; `pool.defaultTemplate` is the first unless set. */
      templates: Templates,
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

function noEncode(): never {
  throw new Error('a decoded configuration is not encoded back')
}
