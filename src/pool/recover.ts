import type { Logger } from 'pino'
import type { Config } from '../config/types.js'
import { ConflictError } from '../domain/errors.js'
import { isInstanceId, isUserId } from '../domain/ids.js'
import type { Instance, InstanceState } from '../domain/instance.js'
import {
  LABEL_ASSIGNED_AT,
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_REQUESTER,
  type Provider,
  type ProviderInstance,
} from '../providers/provider.js'
import { LiveInstanceExistsError, type Store } from '../store/store.js'

/** Label the pool puts on every resource with its generation (replacements under the same id). */
const LABEL_GENERATION = 'studiopool:generation'

export interface RecoverOptions {
  readonly config: Config
  readonly store: Store
  /** Providers by name (initialized); every provider a template uses should be here. */
  readonly providers: ReadonlyMap<string, Provider>
  readonly log: Logger
  /** Recover into a store that already holds instances or history; ids already present are left alone. */
  readonly force?: boolean
  readonly now?: () => number
}

export interface RecoveredInstance {
  readonly instanceId: string
  readonly template: string
  readonly provider: string
  readonly ref: string
  readonly state: InstanceState
  readonly ownerId: string | null
}

export interface RecoveryReport {
  /** Resources the providers listed with this pool's id, whatever their state. */
  readonly listed: number
  readonly instances: readonly RecoveredInstance[]
  /** Open assignments rebuilt (instances with an owner). */
  readonly assignments: number
  /** Resources not made into instances, and why (terminated, unknown template, duplicate, bad label…). */
  readonly skipped: readonly {
    readonly ref: string
    readonly provider: string
    readonly instanceId: string
    readonly reason: string
  }[]
  /** Providers whose list() failed: what they hold was not recovered. */
  readonly failedProviders: readonly { readonly provider: string; readonly error: string }[]
}

/**
 * `studiopool recover` (issue 9, architecture.md contract 4): rebuilds instances, owners and open
 * assignments from the labels every provider resource carries (pool, instance, template,
 * generation, and — recorded on claim by relabel — owner, assignment start and requester key),
 * into an empty store. Run it with the server stopped; the next start's worker probes the
 * recovered instances (they come back `starting`, or `suspended` when stopped) and serves them.
 *
 * What cannot be rebuilt: queued requests (they hold no resource), ended history, API keys made
 * through the API (seed and config keys come back from the configuration), and progress tokens
 * (a recovered instance can no longer post progress; its readiness probe still works).
 *
 * @throws ConflictError when the store is not empty and `force` is not set.
 */
export async function recoverFromProviders(o: RecoverOptions): Promise<RecoveryReport> {
  const now = o.now ?? Date.now
  const { store } = o
  if (!o.force) {
    const rows = await store.listInstances({ limit: 1 })
    const history = await store.listHistory({ limit: 1 })
    if (rows.length || history.length) {
      throw new ConflictError(
        'the store is not empty: recover rebuilds an empty store from the providers (use --force to add only what is missing)',
      )
    }
  }
  const skipped: Skipped[] = []
  const failedProviders: { provider: string; error: string }[] = []
  const candidates = new Map<string, Candidate>()
  let listed = 0

  for (const [name, provider] of o.providers) {
    let resources: ProviderInstance[]
    try {
      resources = await provider.list({ log: o.log })
    } catch (err) {
      failedProviders.push({ provider: name, error: (err as Error).message })
      continue
    }
    listed += resources.length
    for (const res of resources) collect(o.config, name, res, candidates, skipped)
  }

  const instances: RecoveredInstance[] = []
  let assignments = 0
  // Oldest first, so that when two resources claim one user and template the earlier keeps the owner.
  const ordered = [...candidates.entries()].sort((a, b) => (a[1].res.createdAt ?? 0) - (b[1].res.createdAt ?? 0))
  for (const [id, candidate] of ordered) {
    const r = await insertRecovered(store, id, candidate, now(), skipped)
    if (!r) continue
    instances.push(r)
    if (r.ownerId) assignments++
  }
  return { listed, instances, assignments, skipped, failedProviders }
}

type Skipped = RecoveryReport['skipped'][number]

interface Candidate {
  readonly res: ProviderInstance
  readonly provider: string
  readonly generation: number
}

/** One listed resource: a candidate instance (the newest generation per id wins), or skipped with why. */
function collect(
  config: Config,
  name: string,
  res: ProviderInstance,
  candidates: Map<string, Candidate>,
  skipped: Skipped[],
): void {
  const skip = (reason: string): void => {
    skipped.push({ ref: res.ref, provider: name, instanceId: res.instanceId, reason })
  }
  if (res.state === 'terminated') return skip('terminated')
  const id = res.labels[LABEL_INSTANCE] ?? res.instanceId
  if (!isInstanceId(id)) return skip('no valid studiopool:instance label')
  const t = config.templates.find((x) => x.name === res.template)
  if (!t) return skip(`template "${res.template}" is not in the configuration`)
  if (t.provider !== name) return skip(`template "${t.name}" uses provider ${t.provider}, not ${name}`)
  const generation = Number(res.labels[LABEL_GENERATION] ?? 0)
  const gen = Number.isSafeInteger(generation) && generation >= 0 ? generation : 0
  const prev = candidates.get(id)
  // Two resources for one instance (a replacement whose predecessor is still shutting down): the newest generation wins.
  if (prev && (prev.generation > gen || (prev.generation === gen && (prev.res.createdAt ?? 0) >= (res.createdAt ?? 0))))
    return skip(`older duplicate of instance ${id}`)
  if (prev)
    skipped.push({
      ref: prev.res.ref,
      provider: prev.provider,
      instanceId: id,
      reason: `older duplicate of instance ${id}`,
    })
  candidates.set(id, { res, provider: name, generation: gen })
}

/** Inserts one recovered instance (and its open assignment when it has an owner); undefined when it is in the store already. */
async function insertRecovered(
  store: Store,
  id: string,
  { res, provider, generation }: Candidate,
  at: number,
  skipped: Skipped[],
): Promise<RecoveredInstance | undefined> {
  if (await store.getInstance(id)) {
    skipped.push({ ref: res.ref, provider, instanceId: id, reason: 'already in the store' })
    return undefined
  }
  const created = res.createdAt ?? at
  const owner = res.labels[LABEL_OWNER]
  let ownerId = owner !== undefined && isUserId(owner) ? owner : null
  const assignedRaw = Number(res.labels[LABEL_ASSIGNED_AT])
  const assignedAt = ownerId ? (Number.isSafeInteger(assignedRaw) && assignedRaw > 0 ? assignedRaw : created) : null
  const keyName = ownerId ? (res.labels[LABEL_REQUESTER] ?? null) : null
  const state: InstanceState = res.state === 'stopped' ? 'suspended' : 'starting'
  const row = (owner: string | null): Parameters<Store['insertInstance']>[0] => ({
    id,
    template: res.template,
    state,
    ownerId: owner,
    keyName: owner ? keyName : null,
    providerRef: res.ref,
    address: res.address,
    generation,
    createdAt: created,
    updatedAt: at,
    startedAt: at,
    assignedAt: owner ? assignedAt : null,
    lastActivityAt: owner ? at : null,
    progress: 50,
    progressMessage: 'recovered from the provider; checking the app',
  })
  let inst: Instance
  try {
    inst = await store.insertInstance(row(ownerId))
  } catch (err) {
    if (!(err instanceof LiveInstanceExistsError) || !ownerId) throw err
    // The user already has a recovered instance of this template: this one comes back free.
    skipped.push({
      ref: res.ref,
      provider,
      instanceId: id,
      reason: `owner ${ownerId} already has a live ${res.template} instance; recovered as free`,
    })
    ownerId = null
    inst = await store.insertInstance(row(null))
  }
  if (ownerId) {
    await store.openAssignment({
      instanceId: id,
      template: inst.template,
      userId: ownerId,
      keyName: inst.keyName,
      startedAt: assignedAt ?? created,
    })
  }
  await store.audit({
    at,
    instanceId: id,
    event: 'recovered',
    actor: 'recover',
    detail: { provider, ref: res.ref, ownerId, generation },
  })
  return { instanceId: id, template: inst.template, provider, ref: res.ref, state: inst.state, ownerId }
}
