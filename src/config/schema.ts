import { Type, type Static } from '@sinclair/typebox'

/**
 * The one schema of the configuration file (`studiopool.yaml`). Durations accept `90s`, `30m`,
 * `12h` or a number of milliseconds; secrets accept a literal, `env:NAME` or `file:PATH`.
 * `load.ts` turns the validated file into the normalized `Config` (config/types.ts).
 */
const Duration = Type.Union(
  [Type.Integer({ minimum: 0 }), Type.String({ pattern: '^\\s*\\d+(\\.\\d+)?\\s*(ms|s|m|h|d)?\\s*$' })],
  {
    description: 'a duration: 90s, 30m, 12h, 1d, or milliseconds',
  },
)
const Secret = Type.String({ minLength: 1, description: 'a secret: literal, env:NAME or file:PATH' })
const StrList = Type.Array(Type.String({ minLength: 1 }))

export const TemplateSchema = Type.Object(
  {
    displayName: Type.Optional(Type.String({ maxLength: 100 })),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    provider: Type.Optional(Type.String({ minLength: 1 })),
    minFree: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000 })),
    maxInstances: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    idleTimeout: Type.Optional(Duration),
    maxLifetime: Type.Optional(Duration),
    startTimeout: Type.Optional(Duration),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    /** Probed until the app answers; `{{basePath}}` stands for the instance's `/s/<id>/` (apps that keep the prefix). */
    healthPath: Type.Optional(Type.String({ pattern: '^(/|\\{\\{basePath\\}\\})' })),
    pathMode: Type.Optional(Type.Union([Type.Literal('strip'), Type.Literal('keep')])),
    hostHeader: Type.Optional(Type.Union([Type.Literal('target'), Type.Literal('preserve')])),
    whenFull: Type.Optional(Type.Union([Type.Literal('queue'), Type.Literal('reject')])),
    allowedGroups: Type.Optional(StrList),
    activityIgnore: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 500 }), { maxItems: 50 })),
    pricePerHour: Type.Optional(Type.Number({ minimum: 0 })),
    /**
     * Header fields the gateway sends on every upstream request and WebSocket upgrade of this
     * template's instances (`Authorization: 'token {{appToken}}'`); tokens `{{appToken}}`, `{{user}}`,
     * `{{instanceId}}`. Client-sent fields of the same names are dropped. Checked in load.ts.
     */
    upstreamHeaders: Type.Optional(Type.Record(Type.String(), Type.String(), { maxProperties: 20 })),
    /** Provider-specific settings; validated by the provider. */
    local: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    ec2: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    fake: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    docker: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    slurm: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: false },
)

export const ConfigSchema = Type.Object(
  {
    server: Type.Optional(
      Type.Object(
        {
          host: Type.Optional(Type.String({ minLength: 1 })),
          port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
          publicUrl: Type.Optional(Type.String({ pattern: '^https?://[^/]+$' })),
          /** Base URL instances on other machines (ec2) post progress to; default SERVICE_URL, else publicUrl. */
          instanceCallbackUrl: Type.Optional(Type.String({ pattern: '^https?://[^/?#]+(/[^?#]*)?$' })),
          dataDir: Type.Optional(Type.String({ minLength: 1 })),
          bodyLimit: Type.Optional(Type.Integer({ minimum: 1024, maximum: 100 * 1024 * 1024 })),
          bodyTimeout: Type.Optional(Duration),
          shutdownGrace: Type.Optional(Duration),
          trustProxy: Type.Optional(StrList),
          logLevel: Type.Optional(
            Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l))),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    auth: Type.Optional(
      Type.Object(
        {
          mode: Type.Optional(Type.Union([Type.Literal('keys'), Type.Literal('none')])),
          keys: Type.Optional(
            Type.Array(
              Type.Object(
                {
                  name: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' }),
                  role: Type.Union([Type.Literal('requester'), Type.Literal('proxy'), Type.Literal('admin')]),
                  key: Secret,
                },
                { additionalProperties: false },
              ),
            ),
          ),
          bootstrapAdmin: Type.Optional(Type.Boolean()),
          rateLimit: Type.Optional(
            Type.Integer({
              minimum: 0,
              maximum: 1_000_000,
              description: 'requests per second per requester key (burst: twice that); 0 = off',
            }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    store: Type.Optional(
      Type.Union([
        Type.Object(
          { driver: Type.Literal('sqlite'), path: Type.Optional(Type.String({ minLength: 1 })) },
          { additionalProperties: false },
        ),
        Type.Object(
          {
            driver: Type.Literal('postgres'),
            url: Secret,
            poolSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 200 })),
            connectTimeout: Type.Optional(Duration),
            statementTimeout: Type.Optional(Duration),
            queryTimeout: Type.Optional(Duration),
          },
          { additionalProperties: false },
        ),
      ]),
    ),
    pool: Type.Optional(
      Type.Object(
        {
          id: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,62}$' })),
          maxInstances: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
          defaultTemplate: Type.Optional(Type.String({ minLength: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
    worker: Type.Optional(
      Type.Object(
        {
          enabled: Type.Optional(Type.Boolean()),
          interval: Type.Optional(Duration),
          orphanGrace: Type.Optional(Duration),
          retainEnded: Type.Optional(Duration),
        },
        { additionalProperties: false },
      ),
    ),
    gateway: Type.Optional(
      Type.Object(
        {
          mode: Type.Optional(Type.Union([Type.Literal('path'), Type.Literal('subdomain')])),
          sessionDomain: Type.Optional(Type.String({ pattern: '^[a-z0-9.-]+(:\\d+)?$' })),
          secret: Type.Optional(Secret),
          launchTokenTtl: Type.Optional(Duration),
          cookieTtl: Type.Optional(Duration),
          cookieName: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' })),
          adminAccess: Type.Optional(Type.Boolean()),
          defaultUrl: Type.Optional(Type.String({ pattern: '^https?://' })),
          activityFlush: Type.Optional(Duration),
          upstreamTimeout: Type.Optional(Duration),
          allowedOrigins: Type.Optional(StrList),
          routeToReplace: Type.Optional(Type.String()),
          stringToReplace: Type.Optional(Type.String()),
        },
        { additionalProperties: false },
      ),
    ),
    dashboard: Type.Optional(
      Type.Object(
        {
          login: Type.Optional(
            Type.Union([Type.Literal('dev'), Type.Literal('oidc'), Type.Literal('header'), Type.Literal('off')]),
          ),
          /**
           * Dev login is refused while a provider reports that sessions reach this machine's loopback
           * listeners; `true` allows it anyway (one person on a laptop, whose sessions are theirs). Never
           * allows it behind a proxy or on a non-loopback public URL.
           */
          allowDevLoginFromSessions: Type.Optional(Type.Boolean()),
          admins: Type.Optional(StrList),
          adminGroups: Type.Optional(StrList),
          oidc: Type.Optional(
            Type.Object(
              {
                issuer: Type.String({ pattern: '^https?://' }),
                clientId: Type.String({ minLength: 1 }),
                clientSecret: Type.Optional(Secret),
                scopes: Type.Optional(Type.String()),
                groupsClaim: Type.Optional(Type.String()),
                userClaim: Type.Optional(Type.String()),
              },
              { additionalProperties: false },
            ),
          ),
          header: Type.Optional(
            Type.Object(
              {
                userHeader: Type.Optional(Type.String()),
                groupsHeader: Type.Optional(Type.String()),
                trustedProxies: StrList,
              },
              { additionalProperties: false },
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    split: Type.Optional(
      Type.Object(
        { serviceUrl: Type.Optional(Type.String({ pattern: '^https?://' })), proxyKey: Type.Optional(Secret) },
        { additionalProperties: false },
      ),
    ),
    providers: Type.Optional(Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown()))),
    templates: Type.Optional(Type.Record(Type.String({ pattern: '^[a-z][a-z0-9-]{0,62}$' }), TemplateSchema)),
  },
  { additionalProperties: false },
)

export type RawConfig = Static<typeof ConfigSchema>
export type RawTemplate = Static<typeof TemplateSchema>
