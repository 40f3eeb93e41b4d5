/**
 * The instance lifecycle's transitions, named (issue 10): each returns the patch it writes and
 * the condition it requires (states, generation, owner), which the store applies as one
 * compare-and-set. Pure: the time comes in as `now`. Only the pool (src/pool/) applies them;
 * eslint.config.js forbids instance-state writes anywhere else.
 */
import type { EndReason, Instance, InstanceState } from './instance.js'
import { TAG_DRAIN_REASON, TAG_DRAINING, type DrainReason } from './shared.js'

/** The fields a transition writes (the store's InstancePatch). */
export type InstanceChange = Partial<Omit<Instance, 'id' | 'template' | 'createdAt'>>

/** What the row must be for the transition to apply (the store's UpdateCondition). */
export interface Requires {
  readonly states?: readonly InstanceState[]
  readonly generation?: number
  /** The owner the row must have (null = free). */
  readonly ownerId?: string | null
}

export interface Transition {
  readonly patch: InstanceChange
  readonly requires: Requires
}

/** A new row's fields (the store's NewInstance). */
export type NewRow = Pick<Instance, 'id' | 'template' | 'state' | 'ownerId' | 'keyName'> &
  Partial<Omit<Instance, 'id' | 'template' | 'state' | 'ownerId' | 'keyName'>>

/** What a provider reports about a resource, as far as transitions need it. */
export interface ResourceSeen {
  readonly ref: string
  readonly address: string | null
}

const ASKING = 'asking the provider for an instance'
const MAKING_ROOM = 'making room for a queued request'

// --- new rows ---------------------------------------------------------------------------

interface Requester {
  readonly userId: string
  readonly keyName: string | null
}

function assignedRow(id: string, template: string, who: Requester, now: number) {
  return {
    id,
    template,
    ownerId: who.userId,
    keyName: who.keyName,
    createdAt: now,
    updatedAt: now,
    assignedAt: now,
    lastActivityAt: now,
  }
}

/** A cold start: a new row for the user, to be created by the provider at once. */
export function newCold(id: string, template: string, who: Requester, now: number): NewRow {
  return {
    ...assignedRow(id, template, who, now),
    state: 'provisioning',
    startedAt: now,
    progress: 0,
    progressMessage: ASKING,
  }
}

/** A request the caps cannot serve now: it waits in the queue. */
export function newQueued(id: string, template: string, who: Requester, now: number): NewRow {
  return {
    ...assignedRow(id, template, who, now),
    state: 'queued',
    progress: 0,
    progressMessage: 'waiting for a free place in the pool',
  }
}

/** A free warm instance (top-up). */
export function newWarm(id: string, template: string, now: number): NewRow {
  return {
    id,
    template,
    state: 'provisioning',
    ownerId: null,
    keyName: null,
    createdAt: now,
    updatedAt: now,
    startedAt: now,
    progress: 0,
    progressMessage: 'warming up',
  }
}

// --- assignment and release ---------------------------------------------------------------

/** A free instance (not ready yet, or any state the caller names) is given to a user. */
export function assign(f: Instance, who: Requester, now: number): Transition {
  return {
    patch: { ownerId: who.userId, keyName: who.keyName, assignedAt: now, lastActivityAt: now, updatedAt: now },
    requires: { states: [f.state], ownerId: null, generation: f.generation },
  }
}

/** A free instance is stopped to make room for a queued request. */
export function evict(f: Instance, now: number): Transition {
  return {
    patch: { state: 'stopping', updatedAt: now, progressMessage: MAKING_ROOM },
    requires: { states: [f.state], ownerId: null },
  }
}

/** A free instance the schedule or the forecast no longer needs is stopped (issue 13); only while still free. */
export function trimFree(f: Instance, now: number): Transition {
  return {
    patch: { state: 'stopping', endReason: 'schedule', updatedAt: now, progressMessage: 'not needed now' },
    requires: { states: [f.state], ownerId: null },
  }
}

/** A queued request is withdrawn: it holds no resource, so it ends at once. */
export function endQueued(reason: EndReason, now: number): Transition {
  return {
    patch: { state: 'terminated', endedAt: now, endReason: reason, updatedAt: now, progressMessage: 'ended' },
    requires: { states: ['queued'] },
  }
}

/** Release: the resource is to be destroyed. */
export function beginStop(inst: Instance, reason: EndReason, now: number): Transition {
  return {
    patch: { state: 'stopping', endReason: reason, updatedAt: now, progressMessage: 'stopping' },
    requires: { states: [inst.state] },
  }
}

/** The resource of a stopping instance is gone. */
export function markTerminated(now: number): Transition {
  return {
    patch: { state: 'terminated', endedAt: now, updatedAt: now, progressMessage: 'ended' },
    requires: { states: ['stopping'] },
  }
}

// --- provisioning and readiness -----------------------------------------------------------

/** A create is about to be asked for: the row gets the progress token's hash. */
export function issueProgressToken(inst: Instance, tokenHash: string, now: number): Transition {
  return {
    patch: {
      progressTokenHash: tokenHash,
      updatedAt: now,
      progress: Math.max(inst.progress, 5),
      progressMessage: inst.generation > 0 ? 'your session is being restored' : ASKING,
    },
    requires: { states: ['provisioning'], generation: inst.generation },
  }
}

/** The provider made the resource: the app is starting. */
export function markProvisioned(
  inst: Instance,
  res: ResourceSeen & { readonly progress?: number; readonly message?: string },
  now: number,
): Transition {
  return {
    patch: {
      state: 'starting',
      providerRef: res.ref,
      address: res.address,
      updatedAt: now,
      progress: Math.max(inst.progress, res.progress ?? 20),
      progressMessage: res.message ?? 'starting the app',
    },
    requires: { states: ['provisioning'], generation: inst.generation },
  }
}

/** The provider made it but the store was not told (a crash between the two): the worker adopts it. */
export function adopt(inst: Instance, res: ResourceSeen, now: number): Transition {
  return {
    patch: {
      state: 'starting',
      providerRef: res.ref,
      address: res.address,
      updatedAt: now,
      progressMessage: 'starting the app',
    },
    requires: { states: ['provisioning'], generation: inst.generation },
  }
}

/** The app answered its readiness probe. */
export function markReady(inst: Instance, now: number): Transition {
  return {
    patch: { state: 'ready', readyAt: now, updatedAt: now, progress: 100, progressMessage: 'ready' },
    requires: { states: ['starting'], generation: inst.generation },
  }
}

/** Progress the instance reported itself (0–99: 100 is the readiness probe's). */
export function reportProgress(inst: Instance, progress: number, message: string, now: number): Transition {
  return {
    patch: {
      progress: Math.max(0, Math.min(99, Math.round(progress))),
      progressMessage: message.slice(0, 200),
      updatedAt: now,
    },
    requires: { generation: inst.generation },
  }
}

/** The instance reported where its app listens (a job wrapper's callback), vouched for by its provider. */
export function reportAddress(inst: Instance, address: string, now: number): Transition {
  return {
    patch: { address, updatedAt: now },
    requires: { states: ['starting'], generation: inst.generation },
  }
}

/** Launch progress a provider reports while the instance starts (a batch queue's pending reason). */
export interface ProgressNote {
  readonly message: string
  readonly progress?: number
}

/**
 * The provider lists the resource under another ref or address (a replaced or moved VM), or
 * reports launch progress of its own (`note`).
 */
export function updateAddress(inst: Instance, res: ResourceSeen, now: number, note?: ProgressNote): Transition {
  return {
    patch: {
      providerRef: res.ref,
      address: res.address ?? inst.address,
      updatedAt: now,
      ...(note
        ? { progressMessage: note.message.slice(0, 200), progress: Math.max(inst.progress, note.progress ?? 0) }
        : {}),
    },
    requires: { generation: inst.generation },
  }
}

// --- failure, replacement, vanishing --------------------------------------------------------

/** A start failed and is retried for its user under a new generation. */
export function retryStart(inst: Instance, reason: string, now: number): Transition {
  return {
    patch: {
      state: 'provisioning',
      startedAt: now,
      generation: inst.generation + 1,
      providerRef: null,
      address: null,
      progress: 0,
      progressMessage: `retrying: ${reason}`.slice(0, 500),
      failureReason: reason.slice(0, 1000),
      updatedAt: now,
    },
    requires: { generation: inst.generation },
  }
}

/** The instance could not start and ends (only if nobody claimed it meanwhile). */
export function fail(inst: Instance, reason: string, now: number): Transition {
  return {
    patch: {
      state: 'failed',
      failureReason: reason.slice(0, 1000),
      endedAt: now,
      endReason: 'failed',
      updatedAt: now,
      progressMessage: 'failed',
    },
    requires: { generation: inst.generation, ownerId: inst.ownerId },
  }
}

/** An assigned instance's resource vanished (or an admin restart): a new one under the same id. */
export function replace(inst: Instance, now: number, why?: string): Transition {
  // The provider's words for what was lost (an eviction, a lost node) are shown; the pool's own are not.
  const shown = why && !/^(resource \w+|restart)$/.test(why) ? `: ${why.slice(0, 300)}` : ''
  return {
    patch: {
      state: 'provisioning',
      startedAt: now,
      generation: inst.generation + 1,
      providerRef: null,
      address: null,
      readyAt: null,
      progress: 0,
      progressMessage: `your session is being restored${shown}`,
      updatedAt: now,
    },
    requires: { generation: inst.generation, states: [inst.state] },
  }
}

/**
 * A free instance's resource vanished: it ends. Only while it is still free: an instance a user
 * claimed meanwhile is the worker's next cycle's to replace, never ended behind the user's back.
 */
export function markVanished(inst: Instance, now: number): Transition {
  return {
    patch: { state: 'terminated', endedAt: now, updatedAt: now, progressMessage: 'vanished' },
    requires: { generation: inst.generation, states: [inst.state], ownerId: null },
  }
}

// --- suspend and resume ---------------------------------------------------------------------

export function markSuspended(now: number): Transition {
  return {
    patch: { state: 'suspended', updatedAt: now, progressMessage: 'suspended' },
    requires: { states: ['ready'] },
  }
}

export function resume(now: number): Transition {
  return {
    patch: {
      state: 'starting',
      startedAt: now,
      updatedAt: now,
      lastActivityAt: now,
      progress: 50,
      progressMessage: 'resuming',
    },
    requires: { states: ['suspended'] },
  }
}

// --- the queue ----------------------------------------------------------------------------

/** A queued request gets a new instance of its own. */
export function promote(now: number): Transition {
  return {
    patch: { state: 'provisioning', startedAt: now, updatedAt: now, progress: 0, progressMessage: ASKING },
    requires: { states: ['queued'] },
  }
}

/** Hand-over, step 1: the free instance `f` ends without touching its resource, which queued `q` takes. */
export function handOff(f: Instance, q: Instance, now: number): Transition {
  return {
    patch: {
      state: 'terminated',
      endedAt: now,
      updatedAt: now,
      providerRef: null,
      address: null,
      progressMessage: `handed over to queued request ${q.id}`,
    },
    requires: { states: [f.state], ownerId: null, generation: f.generation },
  }
}

/** Hand-over, step 2: the queued row takes `f`'s resource, state, address and progress. */
export function takeOver(f: Instance, now: number): Transition {
  return {
    patch: {
      state: f.state,
      providerRef: f.providerRef,
      address: f.address,
      progress: f.progress,
      progressMessage: f.progressMessage,
      progressTokenHash: f.progressTokenHash,
      startedAt: f.startedAt ?? now,
      readyAt: f.readyAt,
      // Idle time counts from now: the user may have waited in the queue longer than the idle timeout.
      lastActivityAt: now,
      updatedAt: now,
    },
    requires: { states: ['queued'] },
  }
}

/** Hand-over undone (the queued request was released meanwhile): `f` is free again as it was. */
export function undoHandOff(f: Instance, now: number): Transition {
  return {
    patch: {
      state: f.state,
      endedAt: null,
      providerRef: f.providerRef,
      address: f.address,
      progressMessage: f.progressMessage,
      updatedAt: now,
    },
    requires: { states: ['terminated'] },
  }
}

// --- shared templates (issue 14) ------------------------------------------------------------

/** A shared instance stops taking new users: it ends when its last connection closes or after the drain grace. */
export function beginDrain(inst: Instance, reason: DrainReason, now: number): Transition {
  return {
    patch: {
      tags: { ...inst.tags, [TAG_DRAINING]: String(now), [TAG_DRAIN_REASON]: reason },
      updatedAt: now,
      progressMessage: reason === 'recycle' ? 'draining: being recycled' : 'draining',
    },
    requires: { states: ['ready'], ownerId: null, generation: inst.generation },
  }
}
