import type { WebhookStore } from './webhook-ops.js'
import type { SharedUsageStore } from './shared-usage-ops.js'
import type { RateDecision } from '../domain/rate-limit.js'
import type { Assignment, AuditEvent, EndReason, Instance, InstanceState } from '../domain/instance.js'
import type { ApiKey } from '../domain/keys.js'
import type { CostSegment, NewSegment } from '../domain/cost-segment.js'

export interface InstanceFilter {
  readonly template?: string
  readonly states?: readonly InstanceState[]
  readonly ownerId?: string
  /** true: only instances with an owner; false: only free ones. */
  readonly assigned?: boolean
  /** Only instances that ended at or after this time (epoch ms). */
  readonly endedSince?: number
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
  /** Only the assignments of these instances (one statement for many; the cost accrual's batch). */
  readonly instanceIds?: readonly string[]
  /** Epoch ms: assignments that overlap [from, to). */
  readonly from?: number
  readonly to?: number
  readonly endReason?: EndReason
  readonly open?: boolean
  /** Only the assignments this API key requested. */
  readonly keyName?: string
  /** Keyset paging: the rows after this one in the list's order (newest first). */
  readonly before?: { readonly startedAt: number; readonly id: number }
  readonly limit?: number
  readonly offset?: number
}

export interface AuditFilter {
  readonly instanceId?: string
  /** Keyset paging: rows older than this id (the list is newest first). */
  readonly beforeId?: number
  /** Default 1000. */
  readonly limit?: number
}

/** Cost segments overlapping [from, to) (docs/cost.md "Cost accrual"). */
export interface CostSegmentFilter {
  readonly instanceId?: string
  /** Only the segments of these instances (one statement for many; the cost accrual's batch). */
  readonly instanceIds?: readonly string[]
  readonly from?: number
  readonly to?: number
  /** Only open segments (instances running now). */
  readonly open?: boolean
}

/** One instance's accrual step (src/cost/accrual.ts plan): close or drop its open segment, insert new ones. */
export interface CostWrite {
  readonly close?: { readonly id: number; readonly endedAt: number }
  readonly drop?: { readonly id: number }
  readonly insert: readonly NewSegment[]
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
  /** The rows of these ids that exist, in no particular order: one statement (per 500 ids) instead of one per id. */
  getInstances(ids: readonly string[]): Promise<Instance[]>
  listInstances(filter?: InstanceFilter): Promise<Instance[]>
  /**
   * One page of `listInstances(filter)` in id order: the rows after `afterId` (null: from the start),
   * at most `limit`. Keyset paging on the primary key: no sort, and each page's read is short, so a
   * long list can be read with turns between pages (the worker's cycle).
   */
  listInstancesPage(filter: InstanceFilter, afterId: string | null, limit: number): Promise<Instance[]>
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
  /** Queued instances oldest first, (created_at, id); after `after` when given (keyset paging). */
  listQueued(template?: string, limit?: number, after?: QueueKey): Promise<Instance[]>
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
  /** Newest first: (startedAt, id) descending. */
  listHistory(filter?: HistoryFilter): Promise<Assignment[]>
  /** How many assignments match the filter (its `before`, `limit` and `offset` ignored). */
  countHistory(filter?: HistoryFilter): Promise<number>

  /** Appends audit rows; several at once are one statement (the pool writes a turn's audits together). */
  audit(e: Omit<AuditEvent, 'id'> | readonly Omit<AuditEvent, 'id'>[]): Promise<void>
  /** Newest first (id descending). */
  listAudit(filter?: AuditFilter): Promise<AuditEvent[]>
  /** How many audit rows match the filter (its `beforeId` and `limit` ignored). */
  countAudit(filter?: AuditFilter): Promise<number>

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

  /** Cost segments, oldest first. */
  listCostSegments(filter?: CostSegmentFilter): Promise<CostSegment[]>
  /** Where the instance's last closed cost segment ended; null when it has none. */
  lastCostEnd(instanceId: string): Promise<number | null>
  /** lastCostEnd of many instances in one statement: the ids that have a closed segment, with its end. */
  lastCostEnds(instanceIds: readonly string[]): Promise<Map<string, number>>
  /**
   * Applies an accrual step; false (nothing written) when the segment to close or drop is no longer
   * open. Run it in a transaction with the reads it was planned from. Throws on a second open segment.
   */
  writeCost(w: CostWrite): Promise<boolean>
  /**
   * Deletes cost segments that ended before `before`, and shared-usage rows whose bucket started
   * before it, of instances whose rows are gone (purged after worker.retainEnded): what a live or
   * retained instance's accrual reads stays. Returns how many of each went.
   */
  purgeCost(before: number): Promise<{ segments: number; shared: number }>

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

/** A route-relevant change of one instance row another process made (Store.watchInstances). */
export interface InstanceChange {
  readonly id: string
  /** When the row changed, epoch ms by the store server's clock (for the propagation-delay metric). */
  readonly changedAt: number
  /** The row as it was written, when the notification carried it (else read it); undefined for a delete. */
  readonly row?: Instance
}

export interface InstanceWatcher {
  changed(change: InstanceChange): void
  /** (Re)connected: changes may have been missed; read everything again. */
  resync(): void
}

export interface InstanceWatch {
  /** Whether notifications arrive now (false while reconnecting). */
  connected(): boolean
  close(): Promise<void>
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
  /**
   * Draws one token from `key`'s bucket (`rate` a second, up to `burst`), shared by every replica
   * on Postgres (one upsert); SQLite (one process) keeps the buckets in memory.
   */
  takeRateToken(key: string, rate: number, burst: number, now: number): Promise<RateDecision>
  /**
   * Runs fn as the worker leader: every instance write in its async context carries the leader
   * epoch and is refused (StaleLeaderError, fence.ts) once another replica leads. Postgres only;
   * on SQLite (one process) fn simply runs. Call after tryLead() returned true.
   */
  fenced<T>(fn: () => Promise<T>): Promise<T>
  /** The epoch this process leads the worker under; undefined when it does not (or on SQLite). */
  leaderEpoch(): number | undefined
  /**
   * Route changes made by any process, as they commit (Postgres LISTEN/NOTIFY, 0008-ha), with a
   * resync on every (re)connect; undefined where only one process uses the store (SQLite).
   */
  watchInstances(watcher: InstanceWatcher): InstanceWatch | undefined
  /** Migrations applied to the store that this code does not know (it is older than the schema). */
  unknownMigrations(): Promise<string[]>
  /** Migrations this code has that the store has not applied yet. */
  pendingMigrations(): Promise<string[]>
  /** Webhook deliveries: the queue and the delivery log (webhook-ops.ts). */
  readonly webhooks: WebhookStore
  /** Users' shares of shared instances' time (shared-usage-ops.ts; docs/cost.md "Shared templates"). */
  readonly sharedUsage: SharedUsageStore
  close(): Promise<void>
}

/** A queued row's place in the queue's order (listQueued's keyset). */
export interface QueueKey {
  readonly createdAt: number
  readonly id: string
}
