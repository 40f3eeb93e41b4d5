/**
 * Row types of the SQL schema (snake_case, as stored). Timestamps are epoch-ms integers
 * (`bigint` on Postgres, parsed back to JS numbers by the pool's own type parser); JSON
 * columns (`tags`, `detail`) are text on both dialects so the SQL stays the same.
 */
import type { ColumnType, Generated } from 'kysely'

export interface InstancesTable {
  id: string
  template: string
  state: string
  owner_id: string | null
  key_name: string | null
  provider_ref: string | null
  address: string | null
  progress: number
  progress_message: string
  progress_token_hash: string | null
  failure_reason: string | null
  generation: number
  created_at: number
  updated_at: number
  started_at: number | null
  ready_at: number | null
  assigned_at: number | null
  last_activity_at: number | null
  ended_at: number | null
  end_reason: string | null
  /** JSON object of string → string. */
  tags: string
  /** The worker leader's epoch that wrote the row last (0008-ha); null for API writes. */
  leader_epoch?: number | null
}

/** 0008-ha: the worker leader's generation per pool (fencing). */
export interface LeaderEpochsTable {
  pool_id: string
  epoch: number
  holder: string
  acquired_at: number
}

export interface AssignmentsTable {
  id: Generated<number>
  instance_id: string
  template: string
  user_id: string
  key_name: string | null
  started_at: number
  ended_at: number | null
  end_reason: string | null
  cost: number | null
}

export interface ApiKeysTable {
  id: string
  name: string
  role: string
  hash: string
  created_at: number
  revoked_at: number | null
  last_used_at: number | null
}

export interface AuditLogTable {
  id: Generated<number>
  at: number
  instance_id: string | null
  event: string
  actor: string | null
  /** JSON object. */
  detail: string
}

export interface NoncesTable {
  nonce: string
  expires_at: number
}

export interface MetaTable {
  key: string
  value: string
}

export interface StateSamplesTable {
  at: number
  template: string
  state: string
  count: ColumnType<number, number, number>
}

export interface CostSegmentsTable {
  id: Generated<number>
  instance_id: string
  template: string
  kind: string
  user_id: string | null
  key_name: string | null
  /** JSON array of group names. */
  groups: string
  market: string
  rate_per_hour: number
  currency: string
  started_at: number
  ended_at: number | null
}

export interface SharedUsageTable {
  instance_id: string
  /** The bucket's start, epoch ms. */
  bucket: number
  user_id: string
  template: string
  /** JSON array of group names (the user's `cost.groups` when the row was first written). */
  groups: string
  weight: number
  ms: number
}

export interface Database {
  instances: InstancesTable
  assignments: AssignmentsTable
  api_keys: ApiKeysTable
  audit_log: AuditLogTable
  nonces: NoncesTable
  meta: MetaTable
  state_samples: StateSamplesTable
  cost_segments: CostSegmentsTable
  shared_usage: SharedUsageTable
  leader_epochs: LeaderEpochsTable
  webhook_deliveries: WebhookDeliveriesTable
}

export interface WebhookDeliveriesTable {
  seq: Generated<number>
  webhook: string
  event_id: string
  event_type: string
  body: string
  status: string
  attempts: number
  next_attempt_at: number
  claimed_until: number
  last_status: number | null
  last_error: string | null
  created_at: number
  delivered_at: number | null
}
