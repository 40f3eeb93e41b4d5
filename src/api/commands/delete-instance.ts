import { Type, type Static } from '@sinclair/typebox'
import { ForbiddenError } from '../../domain/errors.js'
import { canAccess, keyNameOf, requireRole, type ApiDeps, type Caller } from '../context.js'
import { InstanceId, UserId } from '../schemas.js'

export const DeletePayload = Type.Object(
  { instanceId: InstanceId, userId: Type.Optional(UserId) },
  { additionalProperties: true },
)

/** DELETE {instanceId} → {status: "OK"}; idempotent: an unknown or ended instance answers OK too. */
export async function deleteInstance(deps: ApiDeps, caller: Caller, payload: Static<typeof DeletePayload>) {
  requireRole(caller.principal, 'requester', 'proxy', 'user')
  const inst = await deps.store.getInstance(payload.instanceId)
  if (inst && !canAccess(caller.principal, inst, payload.userId)) {
    if (inst.state === 'terminated' || inst.state === 'failed') return { status: 'OK' as const }
    throw new ForbiddenError('this instance belongs to another user')
  }
  const role =
    caller.principal.kind === 'key'
      ? caller.principal.role
      : caller.principal.kind === 'user' && !caller.principal.admin
        ? 'user'
        : 'admin'
  const reason = role === 'proxy' ? 'idle' : role === 'admin' ? 'admin' : 'user'
  await deps.pool.release(payload.instanceId, reason, keyNameOf(caller.principal))
  return { status: 'OK' as const }
}
