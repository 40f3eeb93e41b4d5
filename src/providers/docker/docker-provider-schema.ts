import { Type, type Static } from '@sinclair/typebox'

/**
 * The TypeBox schemas of the docker provider's settings: provider-wide (`providers.docker`) and
 * per template (`templates.<name>.docker`). docs/docker.md lists every key with its default;
 * docker-provider-config.ts parses them into the types the provider uses.
 */

const NAME_RE = '^[a-z0-9][a-z0-9-]{0,62}$'
const ENV_NAME_RE = '^[A-Za-z_][A-Za-z0-9_]*$'
const Duration = Type.Union([Type.Integer({ minimum: 0 }), Type.String()])
const Size = Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: '^\\d+(\\.\\d+)?\\s*[bkmgt]?b?$' })])
const Labels = Type.Record(Type.String({ minLength: 1, maxLength: 200 }), Type.String({ maxLength: 1000 }))

/** TLS to a `tcp://` daemon (dockerd --tlsverify): file paths, read when the provider starts. */
export const dockerTlsSchema = Type.Object(
  {
    /** PEM CA bundle the daemon's certificate must chain to. Default: the system's CAs. */
    ca: Type.Optional(Type.String({ minLength: 1 })),
    /** PEM client certificate and its key (the daemon's --tlsverify checks them). Both or neither. */
    cert: Type.Optional(Type.String({ minLength: 1 })),
    key: Type.Optional(Type.String({ minLength: 1 })),
    /** Check the daemon's certificate and name. Default true; `false` only on a test bench. */
    verify: Type.Optional(Type.Boolean()),
    /** The name the daemon's certificate carries, when not the URL's host. */
    serverName: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
)

export const dockerHostSchema = Type.Object(
  {
    /** Part of every ref (`<name>/<container id>`): keep it stable. */
    name: Type.String({ pattern: NAME_RE }),
    /** `unix:///run/docker.sock`, or `tcp://host:2376` with `tls` (plain tcp: a trusted network only). */
    url: Type.String({ minLength: 1 }),
    /** TLS for a `tcp://` URL: the daemon's CA, a client certificate and key. */
    tls: Type.Optional(dockerTlsSchema),
    /** Containers of this pool on the host, any template. Default: unlimited. */
    maxInstances: Type.Optional(Type.Integer({ minimum: 1 })),
    /** Containers being created and started at once (the rest wait their turn). Default: unlimited. */
    maxConcurrentStarts: Type.Optional(Type.Integer({ minimum: 1 })),
    /** Matched by templates' `hostSelector`. */
    labels: Type.Optional(Labels),
    /** CPUs the host offers to sessions (templates' `cpus` are placed against it). Default: the daemon's CPU count. */
    cpus: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    /** Memory the host offers to sessions (templates' `memory`). Default: the daemon's total memory. */
    memory: Type.Optional(Size),
    /** Host address container ports are published on. Default 127.0.0.1 (the gateway runs on this host). */
    publishIp: Type.Optional(Type.String({ minLength: 1 })),
    /** Host name or IP the gateway connects to for published ports. Default: publishIp, or the tcp URL's host when publishIp is 0.0.0.0. */
    address: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
)

export const dockerProviderSettingsSchema = Type.Object(
  {
    /** Default: one host, `local`, at `unix:///var/run/docker.sock`. */
    hosts: Type.Optional(Type.Array(dockerHostSchema, { minItems: 1, maxItems: 100 })),
    /** Timeout of one Engine API call. Default 30 s. */
    requestTimeout: Type.Optional(Duration),
    /**
     * Timeout of the calls that make, start or stop a container, a network or a volume (slower under
     * load than a list: a start sets up the network). Default 2 min.
     */
    startTimeout: Type.Optional(Duration),
    /** Timeout of one image pull. Default 10 min. */
    pullTimeout: Type.Optional(Duration),
    /** First wait before probing a host that stopped answering; doubles up to 60 s. Default 1 s. */
    downBackoff: Type.Optional(Duration),
  },
  { additionalProperties: false },
)

export const dockerMountSchema = Type.Object(
  {
    type: Type.Union([Type.Literal('bind'), Type.Literal('volume'), Type.Literal('tmpfs')]),
    /** Host path (bind) or volume name (volume); tokens are substituted. Not for tmpfs. */
    source: Type.Optional(Type.String({ minLength: 1 })),
    target: Type.String({ pattern: '^/' }),
    readOnly: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
)

export const dockerTemplateSettingsSchema = Type.Object(
  {
    image: Type.String({ minLength: 1, maxLength: 500 }),
    /** Replaces the image's CMD; tokens substituted in every element. */
    command: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
    env: Type.Optional(Type.Record(Type.String({ pattern: ENV_NAME_RE }), Type.String())),
    /** The app's port inside the container. Default: the template's `port`. */
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    cpus: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1024 })),
    /** Bytes, or `512m`, `2g`. */
    memory: Type.Optional(Size),
    /** Default 1024 processes. */
    pidsLimit: Type.Optional(Type.Integer({ minimum: 1 })),
    shmSize: Type.Optional(Size),
    /** `uid[:gid]` or a name from the image. Default: the image's user, which must not be root (see docs). */
    user: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    readOnlyRootfs: Type.Optional(Type.Boolean()),
    /** Default [ALL]. */
    capDrop: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Z_]+$' }))),
    capAdd: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Z_]+$' }))),
    /** no-new-privileges is on unless this says `false` in words. */
    noNewPrivileges: Type.Optional(Type.Boolean()),
    mounts: Type.Optional(Type.Array(dockerMountSchema, { maxItems: 50 })),
    labels: Type.Optional(Labels),
    /** An existing network to use instead of the managed one (then its isolation is yours). */
    network: Type.Optional(Type.String({ minLength: 1 })),
    pullPolicy: Type.Optional(
      Type.Union([Type.Literal('ifNotPresent'), Type.Literal('always'), Type.Literal('never')]),
    ),
    /**
     * GPUs (Docker's DeviceRequests, as `docker run --gpus`; the host needs the NVIDIA container
     * toolkit): `all`, a count, or `{count?, deviceIds?, driver?, capabilities?}`.
     */
    gpus: Type.Optional(
      Type.Union([
        Type.Literal('all'),
        Type.Integer({ minimum: 1, maximum: 64 }),
        Type.Object(
          {
            count: Type.Optional(Type.Union([Type.Literal('all'), Type.Integer({ minimum: 1, maximum: 64 })])),
            deviceIds: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { minItems: 1 })),
            driver: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
            capabilities: Type.Optional(Type.Array(Type.String({ pattern: '^[a-z0-9_]+$' }), { minItems: 1 })),
          },
          { additionalProperties: false },
        ),
      ]),
    ),
    /** Per-user persistent home: a named volume created on first use and kept when sessions end. */
    home: Type.Optional(
      Type.Object(
        {
          /** Must contain `{{userSlug}}` (or `{{user}}`), so that every user gets their own. */
          volume: Type.String({ minLength: 1 }),
          mountPath: Type.String({ pattern: '^/' }),
        },
        { additionalProperties: false },
      ),
    ),
    /** Hosts whose labels include all of these. */
    hostSelector: Type.Optional(Labels),
    /** Between SIGTERM and SIGKILL on stop and destroy. Default 10 s. */
    stopGrace: Type.Optional(Duration),
  },
  { additionalProperties: false },
)

export type DockerTemplateSettingsInput = Static<typeof dockerTemplateSettingsSchema>
export type DockerMount = Static<typeof dockerMountSchema>
