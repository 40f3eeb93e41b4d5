import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerFactory,
} from 'fastify'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { TSchema } from '@sinclair/typebox'
import { AppError, isAppError, UnauthorizedError, ValidationError } from '../domain/errors.js'
import type { Principal } from '../domain/keys.js'
import type { ApiDeps, Caller } from './context.js'
import { RawJson } from './coalesce.js'
import { registerStrictJson } from './json-body.js'
import { checkReadiness } from './readiness.js'
import { isSafeText } from '../domain/ids.js'
import { DeletePayload, deleteInstance } from './commands/delete-instance.js'
import { GetStatusPayload, getStatus } from './commands/get-status.js'
import { RequestSessionPayload, requestSession } from './commands/request-session.js'
import { AssignmentSchema, ErrorEnvelope, InstanceId, InstanceSchema, SessionGrant } from './schemas.js'
import { restRoutes } from './routes/rest.js'
import { homeRoutes } from './routes/homes.js'
import { peerSet } from '../gateway/peers.js'

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal
  }
}

type CommandHandler = (deps: ApiDeps, caller: Caller, payload: never) => Promise<unknown>
interface CommandDef {
  readonly schema: TSchema
  readonly check: ReturnType<typeof TypeCompiler.Compile>
  readonly run: CommandHandler
}
const def = (schema: TSchema, run: CommandHandler): CommandDef => ({ schema, check: TypeCompiler.Compile(schema), run })

/** The seed's commands (contract 1). REQUEST_SESSION is REQUEST_RSTUDIO under a neutral name. */
const COMMANDS: Record<string, CommandDef> = {
  REQUEST_RSTUDIO: def(RequestSessionPayload, requestSession as CommandHandler),
  REQUEST_SESSION: def(RequestSessionPayload, requestSession as CommandHandler),
  GET_STATUS: def(GetStatusPayload, getStatus as CommandHandler),
  DELETE: def(DeletePayload, deleteInstance as CommandHandler),
}

const CommandBody = Type.Object(
  {
    command: Type.String({ minLength: 1, maxLength: 64, description: Object.keys(COMMANDS).join(' | ') }),
    payload: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: true },
)

export interface BuildOptions {
  /** Lets the composition root put the gateway in front of Fastify on one port. */
  readonly serverFactory?: FastifyServerFactory
}

/** Builds the API server; never listens (tests use inject()). */
export async function buildServer(deps: ApiDeps, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.log.child({ component: 'api' }) as unknown as FastifyBaseLogger,
    // Per-request log lines off (the metrics histogram counts requests); the non-deprecated way in Fastify 5.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.config.server.bodyLimit,
    // The same peer grammar as the gateway's (gateway/peers.ts), so both believe the same proxies.
    trustProxy: deps.config.server.trustProxy.length ? trustedPeer(deps.config.server.trustProxy) : false,
    return503OnClosing: true,
    ...(opts.serverFactory ? { serverFactory: opts.serverFactory } : {}),
    // No type coercion: `{"userId": 123}` is a wrong type, not the string "123". Query strings are parsed by hand.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: true } },
    // A path that does not decode (`/api/v1/keys/%ED%A0%80`) gets the envelope too, not Fastify's own shape.
    frameworkErrors: (err, _req, rep) => {
      const reply = rep as unknown as FastifyReply
      const status = err.statusCode && err.statusCode < 500 ? 400 : 503
      void reply.code(status).send({
        error: {
          code: status === 400 ? 'INVALID_REQUEST' : 'PROVIDER_UNAVAILABLE',
          message: status === 400 ? 'malformed URL or request' : 'not ready',
        },
      })
    },
  })

  app.setErrorHandler(errorHandler)
  // JSON only: without this, a text/plain body reaches the schema as a string ("must be object")
  // instead of being refused with "send JSON".
  app.removeContentTypeParser('text/plain')
  registerStrictJson(app)
  // Ids arrive in query strings and paths too: a NUL reached Postgres as `sessions?userId=%00` and
  // came back 500. Every query value and path parameter is refused with 400 when it holds a control
  // character or a lone surrogate, before any schema or handler sees it (issue 9 item 8).
  app.addHook('preValidation', async (req) => {
    for (const [where, bag] of [
      ['querystring', req.query],
      ['params', req.params],
    ] as const) {
      if (!bag || typeof bag !== 'object') continue
      for (const [k, v] of Object.entries(bag as Record<string, unknown>)) {
        for (const s of Array.isArray(v) ? v : [v]) {
          if ((typeof s === 'string' && !isSafeText(s)) || !isSafeText(k))
            throw new ValidationError(`control character in ${where} parameter`, [
              {
                path: `/${where}/${isSafeText(k) ? k : '?'}`,
                message: 'control characters and lone surrogates are not allowed',
              },
            ])
        }
      }
    }
  })
  app.setNotFoundHandler((req, reply) => {
    void reply
      .code(404)
      .send({ error: { code: 'NOT_FOUND', message: `no route for ${req.method} ${req.url.split('?')[0]}` } })
  })
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unknown'
    deps.metrics.commands.observe(
      { route, status: `${Math.floor(reply.statusCode / 100)}xx` },
      reply.elapsedTime / 1000,
    )
  })

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'studiopool API',
        version: '1',
        description:
          'Sessions from a warm pool behind an owner-only gateway. Authenticate with `Authorization: Bearer <key>`.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => (json.$id as string | undefined) ?? `def-${i}` },
  })
  for (const s of [ErrorEnvelope, InstanceSchema, SessionGrant, AssignmentSchema]) app.addSchema(s)
  // Same-origin only: the docs work offline, and without upgrade-insecure-requests they also work on plain HTTP hosts.
  await app.register(swaggerUi, {
    routePrefix: '/api/docs',
    staticCSP: true,
    transformStaticCSP: () =>
      "default-src 'self'; base-uri 'self'; font-src 'self' data:; frame-ancestors 'self'; img-src 'self' data:; object-src 'none'; script-src 'self'; script-src-attr 'none'; style-src 'self' 'unsafe-inline'",
    uiConfig: { validatorUrl: null },
  })
  app.get('/api/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger())

  const limiter = deps.config.auth.rateLimit > 0 ? new RateLimiter(deps.config.auth.rateLimit) : undefined
  /** Authenticates API keys (or auth: none), then applies the per-requester-key rate limit. */
  const authenticate = async (req: FastifyRequest) => {
    if (deps.config.auth.mode === 'none') {
      req.principal = { kind: 'system' }
      return
    }
    const p = await deps.keyring.authenticate(req.headers)
    req.principal = p
    if (limiter && p.kind === 'key' && p.role === 'requester') {
      const wait = limiter.take(p.name)
      if (wait > 0)
        throw new AppError('RATE_LIMITED', `too many requests for key "${p.name}"`, {
          retryAfter: Math.ceil(wait / 1000),
        })
    }
  }

  // Contract 1: the command protocol, at POST / and POST /api/commands.
  const commandRoute = {
    schema: {
      summary: 'Seed command protocol (REQUEST_RSTUDIO, REQUEST_SESSION, GET_STATUS, DELETE)',
      tags: ['commands'],
      body: CommandBody,
      response: {
        400: { $ref: 'Error#' },
        401: { $ref: 'Error#' },
        403: { $ref: 'Error#' },
        404: { $ref: 'Error#' },
        503: { $ref: 'Error#' },
      },
    },
    onRequest: authenticate,
  }
  const handleCommand = async (request: FastifyRequest, reply: FastifyReply) => {
    const req = request as FastifyRequest<{ Body: { command: string; payload?: Record<string, unknown> } }>
    const cmd = Object.prototype.hasOwnProperty.call(COMMANDS, req.body.command)
      ? COMMANDS[req.body.command]
      : undefined
    if (!cmd)
      throw new AppError(
        'UNKNOWN_COMMAND',
        `unknown command "${String(req.body.command).slice(0, 64)}"; known: ${Object.keys(COMMANDS).join(', ')}`,
      )
    const payload = req.body.payload ?? {}
    if (!cmd.check.Check(payload)) {
      const details = [...cmd.check.Errors(payload)]
        .slice(0, 20)
        .map((e) => ({ path: `/payload${e.path}`, message: e.message }))
      throw new ValidationError(`invalid payload for ${req.body.command}`, details)
    }
    const result = await cmd.run(deps, { principal: req.principal! }, payload as never)
    if (result instanceof RawJson) return reply.type('application/json; charset=utf-8').send(result.bytes)
    return result
  }
  app.post('/', { ...commandRoute, schema: { ...commandRoute.schema, hide: true } }, handleCommand)
  app.post('/api/commands', commandRoute, handleCommand)

  app.get('/healthz', { schema: { tags: ['health'], summary: 'alive', security: [] } }, async () => ({ status: 'ok' }))
  app.get(
    '/readyz',
    {
      schema: {
        tags: ['health'],
        summary: 'store writable, a template can serve, not shutting down (503 with reasons otherwise)',
        security: [],
      },
    },
    async (_req, reply) => {
      const r = await checkReadiness({
        store: deps.store,
        templates: deps.config.templates.map((t) => ({
          name: t.name,
          unavailable: deps.pool.unavailableReason(t.name),
        })),
        draining: deps.draining,
      })
      // What each provider isolates (DESIGN.md contract 5); the notes only where something is not.
      const isolation = deps.pool
        .isolation()
        .map((i) => ({ provider: i.provider, isolated: i.isolated, ...(i.isolated ? {} : { notes: i.notes }) }))
      return reply
        .code(r.ready ? 200 : 503)
        .send({ status: r.ready ? 'ready' : 'not ready', checks: r.checks, isolation })
    },
  )
  app.get(
    '/metrics',
    { schema: { tags: ['health'], summary: 'Prometheus metrics (admin or proxy key)' }, onRequest: authenticate },
    async (req, reply) => {
      const p = req.principal!
      if (p.kind === 'key' && p.role === 'requester')
        throw new AppError('FORBIDDEN', 'metrics need an admin or proxy key')
      await refreshGauges(deps)
      return reply.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics())
    },
  )

  // The instance's own progress callback (MLiy-style): authenticated by its per-instance token, not a key.
  app.post(
    '/api/v1/instances/:id/progress',
    {
      schema: {
        tags: ['instances'],
        summary: 'Progress report from the instance itself (Bearer <per-instance progress token>)',
        params: Type.Object({ id: InstanceId }),
        body: Type.Object(
          {
            progress: Type.Number({ minimum: 0, maximum: 100 }),
            message: Type.Optional(Type.String({ maxLength: 200 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (req) => {
      const { id } = req.params as { id: string }
      const body = req.body as { progress: number; message?: string }
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')
      if (!m) throw new UnauthorizedError('missing progress token')
      const inst = await deps.pool.reportProgress(id, m[1]!, body.progress, body.message ?? '')
      return { instanceId: inst.id, progress: inst.progress, message: inst.progressMessage }
    },
  )

  await app.register(async (scope) => {
    scope.addHook('onRequest', authenticate)
    await restRoutes(scope, deps)
    await homeRoutes(scope, deps)
  })

  if (deps.gatewayFeed) {
    const feed = deps.gatewayFeed
    await app.register(async (scope) => {
      scope.addHook('onRequest', async (req) => {
        await authenticate(req)
        const pr = req.principal!
        if (pr.kind === 'key' && pr.role === 'requester')
          throw new AppError('FORBIDDEN', 'the gateway feed needs a proxy or admin key')
      })
      const { gatewayFeedRoutes } = await import('./routes/gateway-feed.js')
      await scope.register(gatewayFeedRoutes, feed)
    })
  }

  for (const plugin of deps.plugins ?? []) await plugin(app)
  return app
}

/** Token buckets per key name: `rate` tokens a second, bursts up to twice that. */
class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>()
  constructor(readonly rate: number) {}
  /** 0 when allowed; else milliseconds until a token is available. */
  take(name: string, now = Date.now()): number {
    const cap = this.rate * 2
    const b = this.#buckets.get(name) ?? { tokens: cap, at: now }
    b.tokens = Math.min(cap, b.tokens + ((now - b.at) / 1000) * this.rate)
    b.at = now
    this.#buckets.set(name, b)
    if (b.tokens >= 1) {
      b.tokens -= 1
      return 0
    }
    return ((1 - b.tokens) / this.rate) * 1000
  }
}

async function refreshGauges(deps: ApiDeps): Promise<void> {
  const counts = await deps.store.countByState()
  deps.metrics.instances.reset()
  const assigned = await deps.store.listInstances({
    assigned: true,
    states: ['queued', 'provisioning', 'starting', 'ready', 'suspended'],
  })
  const a = new Map<string, number>()
  for (const i of assigned) a.set(`${i.template}|${i.state}`, (a.get(`${i.template}|${i.state}`) ?? 0) + 1)
  for (const c of counts) {
    if (c.state === 'terminated' || c.state === 'failed') continue
    const n = a.get(`${c.template}|${c.state}`) ?? 0
    deps.metrics.instances.set({ template: c.template, state: c.state, assigned: 'true' }, n)
    deps.metrics.instances.set({ template: c.template, state: c.state, assigned: 'false' }, c.count - n)
  }
  deps.metrics.queueLength.reset()
  for (const t of deps.config.templates)
    deps.metrics.queueLength.set(
      { template: t.name },
      counts.find((c) => c.template === t.name && c.state === 'queued')?.count ?? 0,
    )
}

/** One envelope for every error: `{error: {code, message, details?}}`; never a stack trace. */
export function errorHandler(err: FastifyError | AppError | Error, req: FastifyRequest, reply: FastifyReply): void {
  if (isAppError(err)) {
    if (err.retryAfter) void reply.header('retry-after', String(err.retryAfter))
    if (err.statusCode === 401) void reply.header('www-authenticate', 'Bearer')
    // A store outage is logged once by the store guard when it begins, not once per request.
    if (err.statusCode >= 500 && err.code !== 'STORE_UNAVAILABLE')
      req.log.warn({ code: err.code, msg: err.message }, 'request failed')
    void reply.code(err.statusCode).send({ error: err.toJSON() })
    return
  }
  const fe = err as FastifyError
  if (fe.validation) {
    const details = fe.validation
      .slice(0, 20)
      .map((v) => ({ path: `/${fe.validationContext ?? 'body'}${v.instancePath}`, message: v.message ?? 'invalid' }))
    void reply
      .code(400)
      .send({ error: { code: 'INVALID_REQUEST', message: `invalid ${fe.validationContext ?? 'request'}`, details } })
    return
  }
  const status = fe.statusCode ?? 500
  if (status === 413) {
    void reply.code(413).send({ error: { code: 'TOO_LARGE', message: 'request body is too large' } })
    return
  }
  if (status >= 400 && status < 500) {
    // Malformed JSON, wrong content type, bad headers: the client's fault, said plainly.
    const message =
      fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? 'send JSON (content-type: application/json)'
        : fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY'
          ? 'the body is empty'
          : 'malformed request body (not valid JSON)'
    void reply.code(400).send({ error: { code: 'INVALID_REQUEST', message } })
    return
  }
  req.log.error({ err }, 'unhandled error')
  void reply.code(500).send({ error: { code: 'INTERNAL', message: 'internal error' } })
}

/** Fastify's trust function for `server.trustProxy` (every hop in the set is believed, as with a list). */
function trustedPeer(list: readonly string[]): (address: string, hop: number) => boolean {
  const set = peerSet(list)
  return (address) => set.match(address)
}
