import { Type, type TSchema } from '@sinclair/typebox'

/**
 * The API's operations as the OpenAPI document names and describes them: one `operationId` and one
 * success response per route, in one table (what a generated client is built from). The swagger
 * `transform` in server.ts adds them to the document; they are documentation, not serializers, so a
 * response never loses a field to a schema that lags behind (test/api/openapi.test.ts checks real
 * responses against these schemas instead, and that every documented route has an entry here).
 */
export interface Operation {
  readonly operationId: string
  /** The success status (200 unless the route says otherwise). */
  readonly status?: number
  /** More success statuses with the same body, each with its description (`202` for a session still starting). */
  readonly also?: Readonly<Record<number, string>>
  /** JSON body of the success response; absent for 204. */
  readonly body?: TSchema
  /** For non-JSON bodies (Prometheus text, SSE, CSV). */
  readonly contentType?: string
  readonly description?: string
}

const Str = Type.String()
const NullableStr = Type.Union([Type.String(), Type.Null()])
const Open = <T extends Record<string, TSchema>>(p: T, description?: string) =>
  Type.Object(p, { additionalProperties: true, ...(description ? { description } : {}) })
const Ok = Open({ status: Type.Literal('OK') })
const Instance = Type.Ref('Instance')
const OneInstance = Open({ instance: Instance })

/**
 * A page of a list (src/api/paging.ts): the rows under the list's own key (kept for older clients),
 * `nextCursor` for the next page (null on the last), `total` rows matching the filters.
 */
const Paged = (key: string, item: TSchema) =>
  Open({
    [key]: Type.Array(item),
    nextCursor: Type.Union([Type.String(), Type.Null()], {
      description: 'pass as `cursor` for the next page; null on the last page',
    }),
    total: Type.Integer({ minimum: 0, description: 'rows matching the filters, on every page' }),
  })
const QueueRow = Open({
  position: Type.Integer(),
  instanceId: Str,
  template: Str,
  userId: NullableStr,
  since: Str,
})
const PAGED = 'One page; `nextCursor` (also the `Link: <…>; rel="next"` header) leads to the next.'

const lifecycle = (action: string, description: string): Operation => ({
  operationId: `${action}Instance`,
  body: OneInstance,
  description,
})

export const OPERATIONS: Readonly<Record<string, Operation>> = {
  'POST /api/commands': {
    operationId: 'runCommand',
    description:
      'The seed protocol. REQUEST_RSTUDIO / REQUEST_SESSION answer a SessionGrant; GET_STATUS with an instanceId ' +
      'answers `{instance}`, without one `{instances}`, the assigned instance ids; DELETE answers `{status: "OK"}`.',
    body: Type.Union([
      Type.Ref('SessionGrant'),
      OneInstance,
      Open({ instances: Type.Array(Str) }, 'GET_STATUS {}: the assigned instance ids'),
      Ok,
    ]),
  },
  'GET /healthz': { operationId: 'getHealth', body: Open({ status: Type.Literal('ok') }) },
  'GET /readyz': {
    operationId: 'getReadiness',
    description: '200 when ready; 503 with the same body when not (`checks` says why).',
    body: Open({
      status: Type.Union([Type.Literal('ready'), Type.Literal('not ready')]),
      checks: Type.Record(Str, Type.Unknown()),
      isolation: Type.Array(Open({ provider: Str, isolated: Type.Boolean() })),
    }),
  },
  'GET /metrics': { operationId: 'getMetrics', contentType: 'text/plain', description: 'Prometheus text format 0.0.4' },
  'POST /api/v1/instances/{id}/progress': {
    operationId: 'reportProgress',
    body: Open({ instanceId: Str, progress: Type.Number(), message: Str }),
  },
  'POST /api/v1/sessions': {
    operationId: 'requestSession',
    body: Type.Ref('SessionGrant'),
    description: 'The session is ready: a warm one, or the live one the user has.',
    also: {
      202: 'Accepted: the session is queued or starting (`state`); follow it on `/api/v1/instances/{id}/events`.',
    },
  },
  'GET /api/v1/sessions': { operationId: 'listSessions', body: Open({ sessions: Type.Array(Instance) }) },
  'GET /api/v1/instances': {
    operationId: 'listInstances',
    description: `${PAGED} In instance id order.`,
    body: Paged('instances', Instance),
  },
  'GET /api/v1/instances/{id}': { operationId: 'getInstance', body: OneInstance },
  'GET /api/v1/instances/{id}/events': {
    operationId: 'streamSessionEvents',
    contentType: 'text/event-stream',
    description:
      'Server-sent events: `event: progress` `{instanceId, state, progress, message, queuePosition}` on every ' +
      'change, then `event: ready` `{instance}` or `event: ended` `{instanceId, state, reason}` and the stream ' +
      'closes. `: hb` heartbeats; send `Last-Event-ID` on reconnect to skip the step already seen (docs/api.md).',
  },
  'DELETE /api/v1/instances/{id}': { operationId: 'deleteInstance', body: Ok },
  'POST /api/v1/instances/{id}/stop': lifecycle(
    'stop',
    'Stop: ends the session (reason admin) and terminates the instance, as DELETE does. To keep it, suspend.',
  ),
  'POST /api/v1/instances/{id}/restart': lifecycle('restart', 'A new generation under the same id, URL and owner.'),
  'POST /api/v1/instances/{id}/suspend': lifecycle(
    'suspend',
    'Where the provider can: stops the machine and keeps its disk, the owner and the URL; resume brings it back.',
  ),
  'POST /api/v1/instances/{id}/resume': lifecycle('resume', 'Resumes a suspended instance.'),
  'POST /api/v1/instances/{id}/start': lifecycle('start', 'The older name of resume: resumes a suspended instance.'),
  'GET /api/v1/templates': {
    operationId: 'listTemplates',
    body: Open({
      templates: Type.Array(
        Open({
          name: Str,
          displayName: Str,
          provider: Str,
          minFree: Type.Integer(),
          maxInstances: Type.Integer(),
          available: Type.Boolean(),
          unavailableReason: NullableStr,
          instances: Type.Record(Str, Type.Integer()),
        }),
      ),
      defaultTemplate: Str,
    }),
  },
  'GET /api/v1/pool': {
    operationId: 'getPool',
    body: Open({
      poolId: Str,
      maxInstances: Type.Integer(),
      active: Type.Integer(),
      byTemplate: Type.Record(Str, Type.Record(Str, Type.Integer())),
      queueLength: Type.Integer(),
      queue: Type.Array(QueueRow, { description: 'the oldest 1,000; GET /api/v1/pool/queue pages all of it' }),
    }),
  },
  'GET /api/v1/pool/queue': {
    operationId: 'listQueue',
    description: `${PAGED} Oldest first; \`position\` is within the row's template, as GET_STATUS shows it.`,
    body: Paged('queue', QueueRow),
  },
  'GET /api/v1/history': {
    operationId: 'listHistory',
    description: `${PAGED} Newest first. JSON, or CSV with \`format=csv\` (the total in \`X-Total-Count\`).`,
    body: Paged('history', Type.Ref('Assignment')),
  },
  'GET /api/v1/usage': { operationId: 'getUsage', body: Open({ from: Str, to: Str }) },
  'GET /api/v1/audit': {
    operationId: 'listAudit',
    description: `${PAGED} Newest first.`,
    body: Paged('events', Open({ at: Str, event: Str })),
  },
  'GET /api/v1/keys': {
    operationId: 'listKeys',
    description: `${PAGED} Configured keys first, then by creation.`,
    body: Paged(
      'keys',
      Open({
        id: Str,
        name: Str,
        role: Str,
        source: Type.Union([Type.Literal('store'), Type.Literal('config')]),
        createdAt: NullableStr,
        revokedAt: NullableStr,
        lastUsedAt: NullableStr,
      }),
    ),
  },
  'POST /api/v1/keys': {
    operationId: 'createKey',
    status: 201,
    body: Open({ id: Str, name: Str, role: Str, key: Type.String({ description: 'the secret, shown this once' }) }),
  },
  'DELETE /api/v1/keys/{id}': { operationId: 'revokeKey', body: Ok },
  'GET /api/v1/webhooks/deliveries': {
    operationId: 'listWebhookDeliveries',
    description: `${PAGED} Newest first.`,
    body: Paged(
      'deliveries',
      Open({
        seq: Type.Integer(),
        webhook: Str,
        eventId: Str,
        event: Str,
        status: Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')]),
        attempts: Type.Integer(),
        lastStatus: Type.Union([Type.Integer(), Type.Null()]),
        lastError: NullableStr,
        createdAt: Str,
        nextAttemptAt: NullableStr,
        deliveredAt: NullableStr,
      }),
    ),
  },
  'GET /api/v1/homes': {
    operationId: 'listHomes',
    body: Open({
      homes: Type.Array(Open({ provider: Str, ref: Str, owner: Str, createdAt: NullableStr, where: Str })),
      unreachable: Type.Array(Str),
    }),
  },
  'DELETE /api/v1/homes': {
    operationId: 'deleteHome',
    body: Open({ deleted: Type.Literal(true), provider: Str, ref: Str }),
  },
  'GET /api/v1/gateway/routes': {
    operationId: 'streamGatewayRoutes',
    contentType: 'text/event-stream',
    description:
      'Server-sent events: `event: reset` (the whole table), then `upsert` / `remove`, each `data:` one JSON ' +
      'route event; `:` heartbeat comments. Reconnect for a full resync.',
  },
  'POST /api/v1/gateway/activity': { operationId: 'recordGatewayActivity', status: 204 },
  'GET /api/v1/gateway/sessions/{id}/stop-status': {
    operationId: 'getSessionStopStatus',
    description: "A session's pending stop, for a split-mode gateway's warning banner.",
    body: Open({
      instanceId: Str,
      state: Str,
      pendingStop: Type.Union([Open({ reason: Str, at: Type.Number() }), Type.Null()]),
      now: Type.Number(),
      warnBeforeMs: Type.Number(),
      warn: Type.Boolean(),
      canKeepWorking: Type.Boolean(),
    }),
  },
  'POST /api/v1/gateway/sessions/{id}/{action}': {
    operationId: 'actOnSessionFromBanner',
    description: '`keep` answers the new stop status; `stop` and `suspend` answer `{status: "OK"}`.',
    body: Type.Union([Open({ instanceId: Str, pendingStop: Type.Unknown() }), Ok]),
  },
  'GET /api/v1/shared': {
    operationId: 'listSharedPools',
    description:
      "Each shared template's bounds, wanted size, queue and instances with their connections (docs/shared-pools.md).",
    body: Open({ shared: Type.Array(Open({ template: Str })) }),
  },
  'POST /api/v1/gateway/shared-load': { operationId: 'reportSharedLoad', status: 204 },
  'GET /api/v1/gateway/shared-gate': {
    operationId: 'getSharedGate',
    description:
      "The hard budgets exceeded now, each with the key it covers and the refusal's message: a split-mode gateway refuses shared templates' new visitors under them (docs/shared-pools.md).",
    body: Open({ budgets: Type.Array(Open({ scope: Str, key: Str, message: Str })) }),
  },
  'POST /api/v1/gateway/nonces': { operationId: 'consumeLaunchNonce', body: Open({ first: Type.Boolean() }) },
}

/** `GET /api/v1/instances/:id` → `GET /api/v1/instances/{id}` (the document's form). */
export function operationKey(method: string, url: string): string {
  return `${method.toUpperCase()} ${url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`
}

/** Adds the table's operationId and success response, and a 4XX error where the route lists none. */
export function documentOperation(
  method: string,
  url: string,
  schema: Record<string, unknown>,
): Record<string, unknown> {
  const op = OPERATIONS[operationKey(method, url)]
  if (!op) return schema
  const response = { ...((schema.response as Record<string, unknown> | undefined) ?? {}) }
  const status = String(op.status ?? 200)
  if (op.status === 204) response[status] = { type: 'null', description: 'No content' }
  else if (op.contentType)
    response[status] = {
      description: op.description ?? 'OK',
      content: { [op.contentType]: { schema: { type: 'string' } } },
    }
  else response[status] = { ...op.body, description: op.description ?? 'OK' }
  for (const [code, description] of Object.entries(op.also ?? {})) response[code] = { ...op.body, description }
  if (!Object.keys(response).some((k) => k.startsWith('4'))) response['4XX'] = { $ref: 'Error#' }
  return { ...schema, operationId: op.operationId, response }
}
