import type { SessionControls } from '../domain/pending-stop.js'
import type { Logger } from 'pino'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../config/types.js'
import { ForbiddenError } from '../domain/errors.js'
import type { Instance } from '../domain/instance.js'
import type { KeyRole, Principal } from '../domain/keys.js'
import type { Metrics } from '../metrics.js'
import type { PoolService } from '../pool/pool-service.js'
import type { Provider } from '../providers/provider.js'
import type { Store } from '../store/store.js'
import type { ActivitySink, NonceLedger, RouteSource } from '../domain/routes.js'
import type { Keyring } from './keyring.js'
import type { Links } from './views.js'
import type { SharedLoadSink, SharedGateSnapshot } from '../domain/shared.js'
import type { ReplicaStatus } from './readiness.js'

export interface ApiDeps {
  readonly config: Config
  readonly store: Store
  readonly pool: PoolService
  readonly keyring: Keyring
  readonly links: Links
  readonly log: Logger
  readonly metrics: Metrics
  readonly providers: ReadonlyMap<string, Provider>
  /** The split-mode gateway feed (route stream, activity, nonces), served to proxy and admin keys. */
  readonly gatewayFeed?: {
    readonly routes: RouteSource
    readonly activity: ActivitySink
    readonly nonces: NonceLedger
    /** Shared templates' load from split-mode gateways (issue 14): the pool. */
    readonly sharedLoad?: SharedLoadSink
    /** The hard budgets exceeded now, for split-mode gateways' shared templates (issue 14). */
    readonly sharedGate?: () => SharedGateSnapshot
    readonly shuttingDown?: AbortSignal
    /** The warning banner's status and actions (docs/widget.md). */
    readonly controls?: SessionControls
  }
  /** True once the server is shutting down (SIGTERM): /readyz answers 503. */
  readonly draining?: () => boolean
  /** Aborted on SIGTERM: long-lived responses (SSE) end cleanly. */
  readonly shuttingDown?: AbortSignal
  /** This replica's leadership and route-table lag, for /readyz (docs/ha.md). */
  readonly replica?: () => ReplicaStatus
  /** Registers more routes (the dashboard) inside the same server. */
  readonly plugins?: readonly ((app: FastifyInstance) => Promise<void> | void)[]
}

/** The caller, as seen by a command or route. */
export interface Caller {
  readonly principal: Principal
}

export function roleOf(p: Principal): KeyRole | 'user' | 'system' {
  if (p.kind === 'key') return p.role
  if (p.kind === 'user') return p.admin ? 'admin' : 'user'
  return 'system'
}

export function requireRole(p: Principal, ...roles: (KeyRole | 'user')[]): void {
  const r = roleOf(p)
  if (r === 'system' || r === 'admin') return
  if (!roles.includes(r)) throw new ForbiddenError(`this needs one of the roles: ${['admin', ...roles].join(', ')}`)
}

/**
 * May this caller see or act on this instance? Admin and proxy: any. A requester: instances it asked
 * for (its key name) or whose owner it names. A dashboard user: their own.
 */
export function canAccess(p: Principal, inst: Instance, namedUser?: string): boolean {
  const r = roleOf(p)
  if (r === 'admin' || r === 'system' || r === 'proxy') return true
  if (p.kind === 'user') return inst.ownerId === p.userId
  if (r === 'requester' && p.kind === 'key') {
    if (namedUser !== undefined) return inst.ownerId === namedUser && (inst.keyName === null || inst.keyName === p.name)
    return inst.keyName === p.name
  }
  return false
}

export function keyNameOf(p: Principal): string | null {
  if (p.kind === 'key') return p.name
  if (p.kind === 'user') return 'dashboard'
  return null
}
