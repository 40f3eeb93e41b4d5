/** The configuration sections of what browsers meet: the gateway, the session banner and the dashboard. */
import { Type } from '@sinclair/typebox'
import { Duration } from './duration-schema.js'
import { DEFAULTS, noEncode, Secret, Section, StrList } from './schema-parts.js'

export const Gateway = Type.Transform(
  Section({
    mode: Type.Union([Type.Literal('path'), Type.Literal('subdomain')], { default: 'path' }),
    sessionDomain: Type.Optional(
      Type.String({ pattern: '^[a-z0-9.-]+(:\\d+)?$', description: 'a lowercase domain name, optionally with :port' }),
    ),
    /** Secret for launch tokens and cookies; absent = generated once and kept in the store (shared by replicas). */
    secret: Type.Optional(Secret),
    launchTokenTtl: Duration(DEFAULTS.launchTokenTtl),
    cookieTtl: Duration(DEFAULTS.cookieTtl),
    cookieName: Type.String({
      pattern: '^[A-Za-z0-9_-]{1,64}$',
      default: DEFAULTS.cookieName,
      description: 'letters, digits, "_" and "-", at most 64',
    }),
    adminAccess: Type.Boolean({ default: false }),
    defaultUrl: Type.Optional(Type.String({ pattern: '^https?://', description: 'an http(s) URL' })),
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

/** The warning banner in sessions of templates with `injectWidget: true` (docs/widget.md). */
export const Widget = Type.Transform(
  Section({
    /** The banner (and the dashboard's warning) shows a pending stop this long before it; 0 = never. */
    warnBefore: Duration(DEFAULTS.widgetWarnBefore),
    /** How often the banner asks for the session's status (at least 1 s). */
    poll: Duration(DEFAULTS.widgetPoll),
  }),
)
  .Decode((w) => ({ warnBeforeMs: w.warnBefore, pollMs: Math.max(1000, w.poll) }))
  .Encode(noEncode)

export const Dashboard = Type.Transform(
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
