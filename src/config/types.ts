import type { KeyRole } from '../domain/keys.js'

/**
 * The validated, normalized configuration: durations are milliseconds, secrets are
 * resolved, defaults are filled in, and the object is deep-frozen. Nothing below
 * `config/` reads `process.env`; everything gets this object (or a part of it).
 */
export interface Config {
  readonly server: {
    readonly host: string
    readonly port: number
    /** Base URL users reach the gateway at, e.g. `https://sessions.example.org`; used for launch links. */
    readonly publicUrl: string
    /**
     * Base URL that instances post progress to (`…/api/v1/instances/<id>/progress`) when it is not
     * `publicUrl`: `server.instanceCallbackUrl`, else `SERVICE_URL`/`split.serviceUrl`; null = publicUrl.
     * See instanceCallbackBase() in config/load.ts.
     */
    readonly instanceCallbackUrl: string | null
    readonly dataDir: string
    /** Maximum request body, bytes. */
    readonly bodyLimit: number
    /** API and dashboard requests must have sent their whole body within this long, ms (0 = no limit); else 408. Sessions are exempt. */
    readonly bodyTimeoutMs: number
    /** On SIGTERM, how long in-flight requests may take to finish before they are cut, ms. */
    readonly shutdownGraceMs: number
    /** Addresses whose X-Forwarded-* headers we trust. */
    readonly trustProxy: readonly string[]
    readonly logLevel: string
  }
  readonly auth: {
    readonly mode: 'keys' | 'none'
    /** Static keys from config / seed env (ARENA_POOL_SERVICE_KEY, PROXY_KEY). Secrets resolved. */
    readonly keys: readonly { readonly name: string; readonly role: KeyRole; readonly key: string }[]
    /** Create and print an admin key on first start when no admin key exists. */
    readonly bootstrapAdmin: boolean
    /** Requests per second per requester key (burst twice that); 0 = off. Admin and proxy keys are not limited. */
    readonly rateLimit: number
  }
  readonly store:
    | { readonly driver: 'sqlite'; readonly path: string }
    | {
        readonly driver: 'postgres'
        readonly url: string
        readonly poolSize: number
        /** ms: connect (and wait for a pooled connection), server statement_timeout, client read timeout, idle in transaction. */
        readonly timeouts: {
          readonly connectMs: number
          readonly statementMs: number
          readonly queryMs: number
          readonly idleInTransactionMs: number
        }
      }
  readonly pool: {
    /** Tag value put on every provider resource; identifies this pool for recovery and orphan reaping. */
    readonly id: string
    /** Pool-wide cap over all templates (active instances). */
    readonly maxInstances: number
    readonly defaultTemplate: string
  }
  readonly worker: {
    readonly enabled: boolean
    readonly intervalMs: number
    readonly orphanGraceMs: number
    /** How long a terminated/failed instance row is kept before it is purged (history stays). */
    readonly retainEndedMs: number
  }
  readonly gateway: {
    readonly mode: 'path' | 'subdomain'
    readonly sessionDomain: string | null
    /** Secret for launch tokens and cookies (resolved); null = generated once and kept in the store (shared by replicas). */
    readonly secret: string | null
    readonly launchTokenTtlMs: number
    readonly cookieTtlMs: number
    readonly cookieName: string
    readonly adminAccess: boolean
    readonly defaultUrl: string | null
    readonly activityFlushMs: number
    readonly upstreamTimeoutMs: number
    /** Extra origins allowed on WebSocket upgrades, besides the gateway's own. */
    readonly allowedOrigins: readonly string[]
    /** Seed proxy compatibility: ROUTE_TO_REPLACE / STRING_TO_REPLACE. */
    readonly routeToReplace: string | null
    readonly stringToReplace: string | null
  }
  readonly dashboard: {
    /** As configured; the login actually offered is decided at start (web/login-policy.ts) and may be `off`. */
    readonly login: 'dev' | 'oidc' | 'header' | 'off'
    /** Dev login even while sessions can reach loopback (see web/login-policy.ts); default false. */
    readonly allowDevLoginFromSessions: boolean
    readonly admins: readonly string[]
    readonly adminGroups: readonly string[]
    readonly oidc: {
      readonly issuer: string
      readonly clientId: string
      readonly clientSecret: string | null
      readonly scopes: string
      readonly groupsClaim: string
      readonly userClaim: string
    } | null
    readonly header: {
      readonly userHeader: string
      readonly groupsHeader: string
      readonly trustedProxies: readonly string[]
    } | null
  }
  /** Split mode: where the API lives, and the key the gateway/worker uses. */
  readonly split: { readonly serviceUrl: string | null; readonly proxyKey: string | null }
  /** Provider-wide settings, keyed by provider name. */
  readonly providers: Readonly<Record<string, Readonly<Record<string, unknown>>>>
  /** Templates in file order; `pool.defaultTemplate` is the first unless set. */
  readonly templates: readonly TemplateConfig[]
}

export type PathMode = 'strip' | 'keep'

export interface TemplateConfig {
  readonly name: string
  readonly displayName: string
  readonly description: string
  readonly provider: string
  readonly minFree: number
  readonly maxInstances: number
  /** 0 = never. */
  readonly idleTimeoutMs: number
  /** 0 = never. */
  readonly maxLifetimeMs: number
  readonly startTimeoutMs: number
  /** The app's port inside the instance (remote providers); local picks a free port. */
  readonly port: number | null
  readonly healthPath: string
  readonly pathMode: PathMode
  /** `target`: Host is the target's (the seed's changeOrigin); `preserve`: the client's Host is passed on. */
  readonly hostHeader: 'target' | 'preserve'
  readonly whenFull: 'queue' | 'reject'
  /** Empty = everybody. */
  readonly allowedGroups: readonly string[]
  /** Request paths (regex sources, relative to the session root) that are keep-alive polling, not activity. */
  readonly activityIgnore: readonly string[]
  readonly pricePerHour: number
  /**
   * Header fields the gateway sends upstream for this template's instances, values with `{{appToken}}`,
   * `{{user}}`, `{{instanceId}}` tokens (domain/upstream-headers.ts). Absent or empty = none.
   */
  readonly upstreamHeaders?: Readonly<Record<string, string>>
  /** The provider's own per-template settings (validated by the provider's schema). */
  readonly settings: Readonly<Record<string, unknown>>
}
