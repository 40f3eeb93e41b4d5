import { Type } from '@sinclair/typebox'
import {
  INSTANCE_ID_PATTERN,
  KEY_ID_PATTERN,
  KEY_NAME_PATTERN,
  TEMPLATE_NAME_PATTERN,
  USER_ID_MAX_LENGTH,
  USER_ID_PATTERN,
} from '../domain/ids.js'

/** One schema per shape, shared by validation and the OpenAPI document. */
export const ErrorEnvelope = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'stable error code, see docs/errors.md' }),
      message: Type.String(),
      details: Type.Optional(Type.Array(Type.Object({ path: Type.Optional(Type.String()), message: Type.String() }))),
    }),
  },
  { $id: 'Error' },
)

// The edge schemas of the domain's rules (domain/ids.ts): the patterns are written there once.
export const InstanceId = Type.String({
  pattern: INSTANCE_ID_PATTERN,
  description: 'studiopool instance id (20 base32 characters)',
})
export const UserId = Type.String({ minLength: 1, maxLength: USER_ID_MAX_LENGTH, pattern: USER_ID_PATTERN })
export const TemplateName = Type.String({ pattern: TEMPLATE_NAME_PATTERN })
export const KeyId = Type.String({ pattern: KEY_ID_PATTERN })
export const KeyName = Type.String({ pattern: KEY_NAME_PATTERN })

export const InstanceSchema = Type.Object(
  {
    instanceId: Type.String(),
    url: Type.String({ description: 'clean session URL (no token)' }),
    state: Type.String(),
    userId: Type.Union([Type.String(), Type.Null()]),
    template: Type.String(),
    progress: Type.Number(),
    progressMessage: Type.String(),
    queuePosition: Type.Union([Type.Integer(), Type.Null()]),
    generation: Type.Integer(),
    keyName: Type.Optional(
      Type.String({
        description:
          "the instance's SSH key pair (EC2 KeyName), as the seed's GET_STATUS; absent where the provider has none",
      }),
    ),
    requesterKey: Type.Union([Type.String(), Type.Null()], {
      description: 'name of the API key that requested the session',
    }),
    failureReason: Type.Union([Type.String(), Type.Null()]),
    endReason: Type.Union([Type.String(), Type.Null()]),
    createdAt: Type.Union([Type.String(), Type.Null()]),
    readyAt: Type.Union([Type.String(), Type.Null()]),
    assignedAt: Type.Union([Type.String(), Type.Null()]),
    lastActivityAt: Type.Union([Type.String(), Type.Null()]),
    endedAt: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'Instance', additionalProperties: true },
)

export const SessionGrant = Type.Object(
  {
    instanceId: Type.String(),
    url: Type.String({ description: 'launch URL to send the user to: carries a short-lived single-use token' }),
    state: Type.String(),
    queuePosition: Type.Union([Type.Integer(), Type.Null()]),
    outcome: Type.String({ description: 'existing | warm | cold | queued' }),
    sessionUrl: Type.String({ description: 'clean session URL' }),
  },
  { $id: 'SessionGrant' },
)

export const AssignmentSchema = Type.Object(
  {
    id: Type.Integer(),
    instanceId: Type.String(),
    template: Type.String(),
    userId: Type.String(),
    keyName: Type.Union([Type.String(), Type.Null()]),
    startedAt: Type.Union([Type.String(), Type.Null()]),
    endedAt: Type.Union([Type.String(), Type.Null()]),
    durationSeconds: Type.Union([Type.Integer(), Type.Null()]),
    endReason: Type.Union([Type.String(), Type.Null()]),
    cost: Type.Union([Type.Number(), Type.Null()]),
  },
  { $id: 'Assignment' },
)
