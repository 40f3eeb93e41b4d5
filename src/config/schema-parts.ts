/** The building blocks of the configuration schema (config/schema.ts and its section modules). */
import { Type, type TSchema } from '@sinclair/typebox'

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
  leaderPoll: '1s', // a standby tries the leader lock, and the leader renews it, this often
  leaderTimeout: '5s', // a silent (frozen, partitioned) leader keeps the lock this long (Postgres idle_session_timeout)
  routeResync: '10s', // full route resync from the store while change notifications flow (1 s without them)
  orphanGrace: '10m',
  retainEnded: '7d',
  launchTokenTtl: '2m',
  cookieTtl: '12h',
  cookieName: 'studiopool_session',
  activityFlush: '5s',
  upstreamTimeout: '1h', // never under 120 s: RStudio and Jupyter long-poll
  widgetWarnBefore: '5m', // the in-session banner shows a pending stop this long before it
  widgetPoll: '15s', // how often the banner asks for the session's status
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

export const Secret = Type.String({ minLength: 1, description: 'a secret: literal, env:NAME or file:PATH' })
export const StrList = Type.Array(Type.String({ minLength: 1 }), { default: [] })
/** An object section: strict keys, `{}` when absent (so that its fields' defaults apply). */
export const Section = <P extends Record<string, TSchema>>(properties: P) =>
  Type.Object(properties, { additionalProperties: false, default: {} })
/** A decoded configuration is never written back: the transforms' Encode side. */
export function noEncode(): never {
  throw new Error('a decoded configuration is not encoded back')
}
