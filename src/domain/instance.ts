/** Instance lifecycle, architecture.md "Instance lifecycle". */
export const INSTANCE_STATES = [
  'queued',
  'provisioning',
  'starting',
  'ready',
  'stopping',
  'terminated',
  'suspended',
  'failed',
] as const
export type InstanceState = (typeof INSTANCE_STATES)[number]

/** States in which an instance holds (or will hold) a provider resource and counts toward caps. */
export const ACTIVE_STATES = [
  'provisioning',
  'starting',
  'ready',
  'stopping',
  'suspended',
] as const satisfies readonly InstanceState[]
/** States in which an instance is the user's live session (one per user and template). */
export const LIVE_STATES = [
  'queued',
  'provisioning',
  'starting',
  'ready',
  'suspended',
] as const satisfies readonly InstanceState[]
/** States of a free instance that a request or a queued one may be given (most advanced first). */
export const FREE_STATES = ['ready', 'starting', 'provisioning'] as const satisfies readonly InstanceState[]
/** Terminal states. */
export const ENDED_STATES = ['terminated', 'failed'] as const satisfies readonly InstanceState[]

export function isLive(state: InstanceState): boolean {
  return (LIVE_STATES as readonly string[]).includes(state)
}

/** Why an assignment (or an instance) ended. */
export const END_REASONS = ['user', 'idle', 'lifetime', 'admin', 'failed', 'schedule', 'budget'] as const
export type EndReason = (typeof END_REASONS)[number]

export interface Instance {
  /** studiopool's own id, see domain/ids.ts. */
  readonly id: string
  readonly template: string
  readonly state: InstanceState
  /** The user the instance is assigned to; null for a free warm instance. */
  readonly ownerId: string | null
  /** Name of the API key that requested the assignment. */
  readonly keyName: string | null
  /** The provider's id (pid, EC2 id); may change when the instance is replaced. */
  readonly providerRef: string | null
  /** Base URL of the app, e.g. `http://127.0.0.1:41234`; null until known. */
  readonly address: string | null
  /** 0–100. */
  readonly progress: number
  readonly progressMessage: string
  /** SHA-256 (hex) of the per-instance progress token. */
  readonly progressTokenHash: string | null
  readonly failureReason: string | null
  /** Incremented each time the instance is replaced under the same id (recovery). */
  readonly generation: number
  /** Epoch milliseconds. */
  readonly createdAt: number
  readonly updatedAt: number
  /** When the current generation entered `provisioning` (start timeouts count from here). */
  readonly startedAt: number | null
  readonly readyAt: number | null
  readonly assignedAt: number | null
  readonly lastActivityAt: number | null
  readonly endedAt: number | null
  readonly endReason: EndReason | null
  /** Free-form labels (seed: "...tags"). */
  readonly tags: Readonly<Record<string, string>>
}

export interface Assignment {
  readonly id: number
  readonly instanceId: string
  readonly template: string
  readonly userId: string
  readonly keyName: string | null
  readonly startedAt: number
  readonly endedAt: number | null
  readonly endReason: EndReason | null
  /** Cost in the template's currency, computed at the end from its hourly price. */
  readonly cost: number | null
}

export interface AuditEvent {
  readonly id: number
  readonly at: number
  readonly instanceId: string | null
  readonly event: string
  readonly actor: string | null
  readonly detail: Readonly<Record<string, unknown>>
}
