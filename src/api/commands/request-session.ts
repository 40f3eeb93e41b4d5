import { Type, type Static } from '@sinclair/typebox'
import type { ApiDeps, Caller } from '../context.js'
import { keyNameOf, requireRole } from '../context.js'
import { TemplateName, UserId } from '../schemas.js'

export const RequestSessionPayload = Type.Object(
  { userId: UserId, template: Type.Optional(TemplateName) },
  { additionalProperties: true },
)

/**
 * REQUEST_RSTUDIO / REQUEST_SESSION: the user's live instance, else a warm one, else a new one within
 * the caps, else the queue (or 503 POOL_FULL under `whenFull: reject`). `url` is the launch URL.
 */
export async function requestSession(deps: ApiDeps, caller: Caller, payload: Static<typeof RequestSessionPayload>) {
  requireRole(caller.principal, 'requester')
  const p = caller.principal
  // A signed-in user asking for themselves owns their live session whichever requester made it.
  const byOwner = p.kind === 'user' && p.userId === payload.userId
  const r = await deps.pool.request({
    userId: payload.userId,
    template: payload.template,
    keyName: keyNameOf(p),
    byOwner,
  })
  return {
    instanceId: r.instance.id,
    url: await deps.links.launchUrl(r.instance.id, payload.userId, r.instance.keyName),
    state: r.instance.state,
    queuePosition: r.queuePosition,
    outcome: r.outcome,
    sessionUrl: deps.links.sessionUrl(r.instance.id),
  }
}
