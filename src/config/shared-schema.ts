import { Type, type StaticDecode } from '@sinclair/typebox'
import type { SharedSettings } from '../domain/shared.js'
import { Duration } from './duration-schema.js'

/** Defaults of the `mode: shared` keys of a template (issue 14, docs/shared-pools.md). */
const S = {
  routing: 'sticky',
  minInstances: 0,
  maxConnectionsPerInstance: 20,
  loadFactor: 0.5,
  scaleInCooldown: '2m',
  drainGrace: '10m',
  queueSize: 100,
  queueTimeout: '30s',
  recycleAfterRequests: 0,
  recycleAfterHours: 0,
} as const

/** The keys of a `mode: shared` template (issue 14); they are ignored by `mode: dedicated`. */
export const SharedKeys = {
  /** `dedicated`: one instance per user; `shared`: instances serve every authorised user at `/a/<template>/`. */
  mode: Type.Union([Type.Literal('dedicated'), Type.Literal('shared')], { default: 'dedicated' }),
  /** `sticky`: a user stays on one instance (Shiny); `per-request`: each request to the least busy (stateless APIs). */
  routing: Type.Union([Type.Literal('sticky'), Type.Literal('per-request')], { default: S.routing }),
  minInstances: Type.Integer({ minimum: 0, maximum: 10_000, default: S.minInstances }),
  maxConnectionsPerInstance: Type.Integer({ minimum: 1, maximum: 100_000, default: S.maxConnectionsPerInstance }),
  loadFactor: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: S.loadFactor }),
  scaleInCooldown: Duration(S.scaleInCooldown),
  drainGrace: Duration(S.drainGrace),
  queueSize: Type.Integer({ minimum: 0, maximum: 100_000, default: S.queueSize }),
  queueTimeout: Duration(S.queueTimeout),
  recycleAfterRequests: Type.Integer({ minimum: 0, default: S.recycleAfterRequests }),
  recycleAfterHours: Type.Number({ minimum: 0, default: S.recycleAfterHours }),
}

/** The decoded shared settings of a template, or null for `mode: dedicated`. */
export function sharedSettings(t: SharedKeyValues): SharedSettings | null {
  if (t.mode !== 'shared') return null
  return {
    routing: t.routing,
    minInstances: t.minInstances,
    maxConnectionsPerInstance: t.maxConnectionsPerInstance,
    loadFactor: t.loadFactor,
    scaleInCooldownMs: t.scaleInCooldown,
    drainGraceMs: t.drainGrace,
    queueSize: t.queueSize,
    queueTimeoutMs: t.queueTimeout,
    recycleAfterRequests: t.recycleAfterRequests,
    recycleAfterMs: Math.round(t.recycleAfterHours * 3_600_000),
  }
}

/** The decoded values of those keys on a template. */
export type SharedKeyValues = StaticDecode<typeof SharedKeysSchema>
/** The keys alone, as an object schema (for their decoded type). */
export const SharedKeysSchema = Type.Object(SharedKeys)
