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

export interface Database {
  instances: InstancesTable
  assignments: AssignmentsTable
  api_keys: ApiKeysTable
  audit_log: AuditLogTable
  nonces: NoncesTable
  meta: MetaTable
  state_samples: StateSamplesTable
}
