/** Rows ↔ domain objects, and the SQL constants both dialects share. */
import type { Kysely, Selectable, Transaction } from 'kysely'
import { ACTIVE_STATES, LIVE_STATES } from '../domain/instance.js'
import type { Assignment, AuditEvent, EndReason, Instance, InstanceState } from '../domain/instance.js'
import type { ApiKey, KeyRole } from '../domain/keys.js'
import { ConflictError } from '../domain/errors.js'
import { LiveInstanceExistsError } from './store.js'
import type { InstancePatch } from './store.js'
import type { Database, InstancesTable, AssignmentsTable, ApiKeysTable, AuditLogTable } from './tables.js'
import { uniqueViolation } from './dialects.js'

/** The store's database handle: the pool, or a transaction's connection. */
export type Db = Kysely<Database> | Transaction<Database>

function parseJsonObject<T>(text: string | null | undefined, fallback: T): T {
  if (!text) return fallback
  try {
    const v: unknown = JSON.parse(text)
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as T) : fallback
  } catch {
    return fallback
  }
}

export function toInstance(r: InstancesTable): Instance {
  return {
    id: r.id,
    template: r.template,
    state: r.state as InstanceState,
    ownerId: r.owner_id,
    keyName: r.key_name,
    providerRef: r.provider_ref,
    address: r.address,
    progress: Number(r.progress),
    progressMessage: r.progress_message,
    progressTokenHash: r.progress_token_hash,
    failureReason: r.failure_reason,
    generation: Number(r.generation),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
    startedAt: numOrNull(r.started_at),
    readyAt: numOrNull(r.ready_at),
    assignedAt: numOrNull(r.assigned_at),
    lastActivityAt: numOrNull(r.last_activity_at),
    endedAt: numOrNull(r.ended_at),
    endReason: r.end_reason as EndReason | null,
    tags: parseJsonObject<Record<string, string>>(r.tags, {}),
  }
}

export function numOrNull(v: number | null): number | null {
  return v === null || v === undefined ? null : Number(v)
}

/** Instance field → column, for patches. */
const INSTANCE_COLUMNS = {
  state: 'state',
  ownerId: 'owner_id',
  keyName: 'key_name',
  providerRef: 'provider_ref',
  address: 'address',
  progress: 'progress',
  progressMessage: 'progress_message',
  progressTokenHash: 'progress_token_hash',
  failureReason: 'failure_reason',
  generation: 'generation',
  updatedAt: 'updated_at',
  startedAt: 'started_at',
  readyAt: 'ready_at',
  assignedAt: 'assigned_at',
  lastActivityAt: 'last_activity_at',
  endedAt: 'ended_at',
  endReason: 'end_reason',
  tags: 'tags',
} as const satisfies Record<keyof InstancePatch, keyof InstancesTable>

export function patchToRow(patch: InstancePatch): Partial<InstancesTable> {
  const row: Record<string, unknown> = {}
  for (const [field, col] of Object.entries(INSTANCE_COLUMNS)) {
    const v = (patch as Record<string, unknown>)[field]
    if (v === undefined) continue
    row[col] = field === 'tags' ? JSON.stringify(v) : v
  }
  return row as Partial<InstancesTable>
}

export function toAssignment(r: Selectable<AssignmentsTable>): Assignment {
  return {
    id: Number(r.id),
    instanceId: r.instance_id,
    template: r.template,
    userId: r.user_id,
    keyName: r.key_name,
    startedAt: Number(r.started_at),
    endedAt: numOrNull(r.ended_at),
    endReason: r.end_reason as EndReason | null,
    cost: r.cost === null ? null : Number(r.cost),
  }
}

export function toKey(r: ApiKeysTable): ApiKey {
  return {
    id: r.id,
    name: r.name,
    role: r.role as KeyRole,
    hash: r.hash,
    createdAt: Number(r.created_at),
    revokedAt: numOrNull(r.revoked_at),
    lastUsedAt: numOrNull(r.last_used_at),
  }
}

export function toAudit(r: Selectable<AuditLogTable>): AuditEvent {
  return {
    id: Number(r.id),
    at: Number(r.at),
    instanceId: r.instance_id,
    event: r.event,
    actor: r.actor,
    detail: parseJsonObject<Record<string, unknown>>(r.detail, {}),
  }
}

export function translateInstanceError(err: unknown): never {
  const v = uniqueViolation(err)
  if (v?.index === 'instances_live_owner_uq') throw new LiveInstanceExistsError()
  if (v?.index === 'instances_pkey') throw new ConflictError('an instance with this id exists')
  throw err
}

export const LIVE = [...LIVE_STATES] as string[]
export const ACTIVE = [...ACTIVE_STATES] as string[]
/** LIVE as an SQL list of literals, for the hand-written warm-hit statements. */
export const LIVE_SQL = LIVE.map((st) => `'${st}'`).join(', ')

/** The audit detail of a warm assignment (both dialects). */
export const warmAuditDetail = (userId: string) => JSON.stringify({ userId, warm: true })
