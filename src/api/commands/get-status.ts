import { Type, type Static } from '@sinclair/typebox'
import { NotFoundError, ValidationError } from '../../domain/errors.js'
import { LIVE_STATES } from '../../domain/instance.js'
import { coalescerFor, RawJson } from '../coalesce.js'
import { canAccess, roleOf, type ApiDeps, type Caller } from '../context.js'
import { InstanceId, UserId } from '../schemas.js'
import { instanceView, keyPairOf } from '../views.js'

export const GetStatusPayload = Type.Object(
  { instanceId: Type.Optional(InstanceId), userId: Type.Optional(UserId) },
  { additionalProperties: true },
)

/**
 * GET_STATUS {} → ids of assigned live instances (a requester sees the ones it asked for);
 * GET_STATUS {instanceId, userId} → one instance. A requester must name the owner (the seed's rule).
 */
export async function getStatus(deps: ApiDeps, caller: Caller, payload: Static<typeof GetStatusPayload>) {
  const p = caller.principal
  const role = roleOf(p)
  if (payload.instanceId === undefined) {
    const { store } = deps
    if (role === 'requester' && p.kind === 'key') {
      if (payload.userId === undefined) {
        // A requester's poll: shared like the proxy's, per key.
        const name = p.name
        return cachedList(
          deps,
          `assigned-ids:${name}`,
          async () => new RawJson({ instances: await store.listAssignedIds({ keyName: name }) }),
        )
      }
      const ids = await store.listAssignedIds({ keyName: p.name })
      // The same rule as for one instance (canAccess): naming a user does not reveal another requester's sessions.
      const named = await store.listInstances({ ownerId: payload.userId, states: LIVE_STATES })
      const extra = named.filter((i) => canAccess(p, i, payload.userId) && !ids.includes(i.id)).map((i) => i.id)
      return { instances: [...ids, ...extra] }
    }
    // Every proxy poller shares the query and the serialized body.
    return cachedList(deps, 'assigned-ids', async () => new RawJson({ instances: await store.listAssignedIds() }))
  }
  if (role === 'requester' && payload.userId === undefined) {
    throw new ValidationError('userId is needed with instanceId', [
      { path: '/payload/userId', message: 'required for requester keys' },
    ])
  }
  const inst = await deps.store.getInstance(payload.instanceId)
  // Someone else's instance looks exactly like a missing one: ids must not be probed.
  if (!inst || !canAccess(p, inst, payload.userId)) throw new NotFoundError('no such instance')
  const pos = inst.state === 'queued' ? await deps.store.queuePosition(inst.id) : null
  return { instance: instanceView(inst, deps.links, pos, keyPairOf(deps, inst.template)) }
}

/**
 * The assigned-ids lists, kept until this process publishes a change (pool.version) and for at most
 * LIST_CACHE_MS: within one process an answer is never older than the last change; changes made by
 * another replica or a separate worker process show within LIST_CACHE_MS. Loads are coalesced.
 */
const LIST_CACHE_MS = 1000
const listCache = new WeakMap<object, Map<string, { version: number; at: number; value: RawJson }>>()

async function cachedList(deps: ApiDeps, name: string, load: () => Promise<RawJson>): Promise<RawJson> {
  let byName = listCache.get(deps.store)
  if (!byName) listCache.set(deps.store, (byName = new Map()))
  const version = deps.pool.version
  const hit = byName.get(name)
  if (hit && hit.version === version && Date.now() - hit.at < LIST_CACHE_MS) return hit.value
  const at = Date.now()
  const value = await coalescerFor(deps.store, name, load).get()
  if (deps.pool.version === version) byName.set(name, { version, at, value })
  return value
}
