import type { Assignment, AuditEvent, EndReason, Instance, InstanceState } from '../domain/instance.js'
import type { ApiKey } from '../domain/keys.js'

export interface InstanceFilter {
  readonly template?: string
  readonly states?: readonly InstanceState[]
  readonly ownerId?: string
  /** true: only instances with an owner; false: only free ones. */
  readonly assigned?: boolean
  readonly limit?: number
}

/** Fields of a new instance row; the store fills createdAt/updatedAt when absent. */
export type NewInstance = Pick<Instance, 'id' | 'template' | 'state' | 'ownerId' | 'keyName'> &
  Partial<Omit<Instance, 'id' | 'template' | 'state' | 'ownerId' | 'keyName'>>

export type InstancePatch = Partial<Omit<Instance, 'id' | 'template' | 'createdAt'>>

export interface UpdateCondition {
  /** Update only when the row is in one of these states (compare-and-set). */
  readonly states?: readonly InstanceState[]
  readonly generation?: number
  /** Update only when the owner is this value (null = free). */
  readonly ownerId?: string | null
}

export interface HistoryFilter {
  readonly userId?: string
  readonly template?: string
  readonly instanceId?: string
  /** Epoch ms: assignments that overlap [from, to). */
  readonly from?: number
  readonly to?: number
  readonly endReason?: EndReason
  readonly open?: boolean
  readonly limit?: number
  readonly offset?: number
}

export interface StateSample {
  readonly at: number
  readonly template: string
  readonly state: InstanceState
  readonly count: number
}

/** Thrown by insertInstance/updateInstance when the user already has a live instance of that template. */
export class LiveInstanceExistsError extends Error {
  readonly code = 'LIVE_INSTANCE_EXISTS'
  constructor(message = 'user already has a live instance of this template') {
    super(message)
  }
}

/**
 * Operations on the store. The same interface inside a transaction (`StoreTx`) and outside.
 * Every method validates nothing: callers (pool, api) check ids before they get here.
 */
export interface StoreOps {
  getInstance(id: string): Promise<Instance | undefined>
  listInstances(filter?: InstanceFilter): Promise<Instance[]>
  /** How many instances match (at most `filter.limit`); cheaper than listing: no ordering, no rows. */
  countInstances(filter?: InstanceFilter): Promise<number>
  /** ids of instances that have an owner and are live (GET_STATUS without id); only those a key requested when keyName is given. */
  listAssignedIds(filter?: { keyName?: string }): Promise<string[]>
  /** Active instances (ACTIVE_STATES) per template and in total: the numbers caps are checked against. */
  countActive(): Promise<{ total: number; byTemplate: Record<string, number> }>
  /** Counts per template and state (metrics, dashboard). */
  countByState(): Promise<{ template: string; state: InstanceState; count: number }[]>
  /** The user's live instance (LIVE_STATES) of the template. */
  findLive(userId: string, template: string): Promise<Instance | undefined>
  /** Throws LiveInstanceExistsError on the (owner, template) live uniqueness. */
  insertInstance(row: NewInstance): Promise<Instance>
  /** Compare-and-set update; undefined when the row is absent or the condition did not hold. */
  updateInstance(id: string, patch: InstancePatch, cond?: UpdateCondition): Promise<Instance | undefined>
  deleteInstance(id: string): Promise<void>
  /** 1-based position among queued instances of the same template, oldest first; null when not queued. */
  queuePosition(id: string): Promise<number | null>
  /** Queued instances, oldest first (all templates when template is undefined). */
  listQueued(template?: string, limit?: number): Promise<Instance[]>
  /** Sets lastActivityAt = max(lastActivityAt, at) for each entry; one statement per batch where possible. */
  recordActivity(entries: readonly { readonly id: string; readonly at: number }[]): Promise<void>

  openAssignment(a: Omit<Assignment, 'id' | 'endedAt' | 'endReason' | 'cost'>): Promise<Assignment>
  /** Closes the open assignment of the instance, if any. */
  closeAssignment(
    instanceId: string,
    endedAt: number,
    reason: EndReason,
    cost: number | null,
  ): Promise<Assignment | undefined>
  listHistory(filter?: HistoryFilter): Promise<Assignment[]>

  audit(e: Omit<AuditEvent, 'id'>): Promise<void>
  listAudit(filter?: { instanceId?: string; limit?: number }): Promise<AuditEvent[]>

  insertKey(key: ApiKey): Promise<void>
  getKey(id: string): Promise<ApiKey | undefined>
  listKeys(): Promise<ApiKey[]>
  revokeKey(id: string, at: number): Promise<boolean>
  touchKey(id: string, at: number): Promise<void>

  /** Records a single-use nonce; true the first time, false when already used. Expired nonces may be purged. */
  consumeNonce(nonce: string, expiresAt: number, now: number): Promise<boolean>

  getMeta(key: string): Promise<string | undefined>
  setMeta(key: string, value: string): Promise<void>
  /** Sets the value only when the key is absent; returns the stored value either way. */
  setMetaIfAbsent(key: string, value: string): Promise<string>

  recordStateSamples(samples: readonly StateSample[]): Promise<void>
  listStateSamples(from: number, to: number): Promise<StateSample[]>
  /** Deletes samples older than `before`; returns how many. */
  purgeStateSamples(before: number): Promise<number>
}

export type StoreTx = StoreOps

/** One warm claim for Store.claimWarm / Store.assignWarm. */
export interface WarmClaimInput {
  readonly template: string
  readonly userId: string
  readonly keyName: string | null
}

/** What a warm claim found: the user's live instance, a free one now assigned to them, or neither. */
export interface WarmClaimResult {
  readonly existing?: Instance
  readonly assigned?: Instance
}

export interface StoreHealth {
  /** The last write that failed because the store was unavailable (not a constraint or a bug). */
  readonly lastWriteError?: { readonly at: number; readonly reason: string }
  /** The last call of any kind that failed that way. */
  readonly lastError?: { readonly at: number; readonly reason: string }
}

export interface Store extends StoreOps {
  /** Which backend runs: for the store's own tests and diagnostics. Code outside src/store/ never reads it (eslint.config.js). */
  readonly dialect: 'sqlite' | 'postgres'
  /** Runs pending migrations. Idempotent; safe to call from several replicas at once. */
  migrate(): Promise<void>
  /**
   * The warm hit, whole, for each claim in order: the user's live instance of the template if
   * there is one; else a free `ready` instance claimed for them (ownerId, keyName, assignedAt and lastActivityAt set), its assignment
   * opened and an `assigned` audit row written, atomically; else neither (none is free). Each
   * claim sees the ones before it. SQLite runs the batch as one transaction (one commit);
   * Postgres runs each claim as one statement. Throws LiveInstanceExistsError when the user got
   * an instance concurrently elsewhere; a throw means no claim of the batch took effect on SQLite.
   */
  assignWarm(claims: readonly WarmClaimInput[], now: number): Promise<WarmClaimResult[]>
  /**
   * The warm hit for one claim, as assignWarm([claim], now)[0] — the pool's REQUEST path. The store
   * may run concurrent claims together: SQLite commits the claims made in one turn of the event loop
   * in one transaction (group commit), each still seeing the ones before it; if that batch fails,
   * each claim runs again alone and gets its own error. Postgres runs each claim as one statement,
   * concurrently on its connections. Throws LiveInstanceExistsError as assignWarm does.
   */
  claimWarm(claim: WarmClaimInput, now: number): Promise<WarmClaimResult>
  /** Cheap query for /readyz. */
  ping(): Promise<void>
  /** A small write for /readyz (one meta row): fails when writes fail (disk full, read-only, no primary). */
  probeWrite(now: number): Promise<void>
  /** What the store has seen lately: the last failed write and the last failure, for /readyz. */
  health(): StoreHealth
  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>
  /**
   * A transaction that holds the pool's assignment lock for its whole length: every decision that
   * checks a cap and then inserts (create, queue, promote, top up) runs under it, so caps hold across
   * concurrent requests and replicas. Postgres: pg_advisory_xact_lock; SQLite: the single
   * connection (and BEGIN IMMEDIATE) serializes.
   */
  withPoolLock<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>
  /**
   * Leader election among replicas for the worker. Postgres: a session advisory lock on a dedicated
   * connection, kept until close(); SQLite: always true. Returns whether this process leads now.
   */
  tryLead(): Promise<boolean>
  close(): Promise<void>
}
