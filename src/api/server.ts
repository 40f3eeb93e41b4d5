import { documentOperation } from './operations.js'
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyServerFactory,
} from 'fastify'
import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import swaggerUi from '@fastify/swagger-ui'
import { AppError, ValidationError } from '../domain/errors.js'
import { isSafeText } from '../domain/ids.js'
import { peerSet } from '../gateway/peers.js'
import { authenticator, type Authenticate } from './auth.js'
import type { ApiDeps } from './context.js'
import { errorHandler } from './error-handler.js'
import { registerStrictJson } from './json-body.js'
import { commandRoutes } from './routes/commands.js'
import { healthRoutes } from './routes/health.js'
import { installBasePath } from './base-path-hook.js'
import { progressRoute } from './routes/progress.js'
import { restRoutes } from './routes/rest.js'
import { homeRoutes } from './routes/homes.js'
import { sessionEventRoutes } from './routes/session-events.js'
import { webhookRoutes } from './routes/webhooks.js'
import { AssignmentSchema, ErrorEnvelope, InstanceSchema, SessionGrant } from './schemas.js'

export { errorHandler } from './error-handler.js'

export interface BuildOptions {
  /** Lets the composition root put the gateway in front of Fastify on one port. */
  readonly serverFactory?: FastifyServerFactory
}

/** Builds the API server; never listens (tests use inject()). */
export async function buildServer(deps: ApiDeps, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const app = createFastify(deps, opts)
  installRequestGuards(app, deps)
  installBasePath(app, deps.config.server.basePath)
  await registerDocs(app, deps.config.server.basePath)
  const authenticate = authenticator(deps)
  await commandRoutes(app, deps, authenticate)
  await healthRoutes(app, deps, authenticate)
  await progressRoute(app, deps)
  await app.register(async (scope) => {
    scope.addHook('onRequest', authenticate)
    await restRoutes(scope, deps)
    await homeRoutes(scope, deps)
    await sessionEventRoutes(scope, deps)
    await webhookRoutes(scope, deps)
  })
  await registerGatewayFeed(app, deps, authenticate)
  for (const plugin of deps.plugins ?? []) await plugin(app)
  return app
}

function createFastify(deps: ApiDeps, opts: BuildOptions): FastifyInstance {
  return Fastify({
    loggerInstance: deps.log.child({ component: 'api' }) as unknown as FastifyBaseLogger,
    // Per-request log lines off (the metrics histogram counts requests); the non-deprecated way in Fastify 5.
    logController: new LogController({ disableRequestLogging: true }),
    // The listener's access log gave the request its id (request-log.ts): Fastify's lines carry the same reqId.
    requestIdHeader: 'x-request-id',
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
}

/** The error envelope, JSON-only bodies, safe text in queries and paths, 404s and the request histogram. */
function installRequestGuards(app: FastifyInstance, deps: ApiDeps): void {
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
}

/** The OpenAPI document (/api/v1/openapi.json), its shared schemas, and the offline docs UI (/api/docs). */
async function registerDocs(app: FastifyInstance, basePath: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'studiopool API',
        version: '1',
        description:
          'Sessions from a warm pool behind an owner-only gateway. Authenticate with `Authorization: Bearer <key>`.',
        license: { name: 'Apache-2.0', url: 'https://www.apache.org/licenses/LICENSE-2.0' },
      },
      // Under a sub-path the operations' paths are relative to it (clients generated from the document, the docs UI's Try it out).
      servers: [{ url: basePath || '/', description: 'this server' }],
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    // operationIds and success responses from one table (operations.ts), in the document only.
    transform: ({ schema, url, route }) => ({
      schema: documentOperation(
        [route.method].flat()[0] ?? 'GET',
        url,
        (schema ?? {}) as Record<string, unknown>,
      ) as typeof schema,
      url,
    }),
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
  app
    .withTypeProvider<TypeBoxTypeProvider>()
    .get('/api/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger())
}

/** The split-mode gateway feed, for proxy and admin keys, where the composition root provides it. */
async function registerGatewayFeed(app: FastifyInstance, deps: ApiDeps, authenticate: Authenticate): Promise<void> {
  if (!deps.gatewayFeed) return
  const feed = deps.gatewayFeed
  await app.register(async (scope) => {
    scope.addHook('onRequest', async (req, reply) => {
      await authenticate(req, reply)
      const pr = req.principal!
      if (pr.kind === 'key' && pr.role === 'requester')
        throw new AppError('FORBIDDEN', 'the gateway feed needs a proxy or admin key')
    })
    const { gatewayFeedRoutes } = await import('./routes/gateway-feed.js')
    await scope.register(gatewayFeedRoutes, feed)
  })
}

/** Fastify's trust function for `server.trustProxy` (every hop in the set is believed, as with a list). */
function trustedPeer(list: readonly string[]): (address: string, hop: number) => boolean {
  const set = peerSet(list)
  return (address) => set.match(address)
}
