import { createHash } from 'node:crypto'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { parseDuration } from '../../domain/duration.js'
import { parseDockerUrl } from './docker-client.js'

/**
 * Settings of the docker provider: provider-wide (`providers.docker`) and per template
 * (`templates.<name>.docker`). docs/docker.md lists every key.
 *
 * ```yaml
 * providers:
 *   docker:
 *     hosts:
 *       - { name: local, url: 'unix:///run/docker.sock', maxInstances: 40, maxConcurrentStarts: 4 }
 * templates:
 *   jupyter:
 *     provider: docker
 *     docker:
 *       image: jupyter/base-notebook:2024-01-01
 *       command: [start-notebook.py, '--NotebookApp.base_url={{basePath}}', '--NotebookApp.token={{appToken}}']
 *       port: 8888
 *       memory: 2g
 *       home: { volume: 'studiopool-home-{{userSlug}}', mountPath: /home/jovyan }
 * ```
 */

const NAME_RE = '^[a-z0-9][a-z0-9-]{0,62}$'
const ENV_NAME_RE = '^[A-Za-z_][A-Za-z0-9_]*$'
const Duration = Type.Union([Type.Integer({ minimum: 0 }), Type.String()])
const Size = Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: '^\\d+(\\.\\d+)?\\s*[bkmgt]?b?$' })])
const Labels = Type.Record(Type.String({ minLength: 1, maxLength: 200 }), Type.String({ maxLength: 1000 }))

export const dockerHostSchema = Type.Object(
  {
    /** Part of every ref (`<name>/<container id>`): keep it stable. */
    name: Type.String({ pattern: NAME_RE }),
    /** `unix:///run/docker.sock` or `tcp://host:2375` (a trusted network only: no TLS yet). */
    url: Type.String({ minLength: 1 }),
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

export const DOCKER_DEFAULTS = {
  url: 'unix:///var/run/docker.sock',
  requestTimeoutMs: 30_000, // 30 seconds per Engine API call
  startTimeoutMs: 120_000, // 2 minutes to create, start or stop a container
  pullTimeoutMs: 600_000, // 10 minutes per image pull
  downBackoffMs: 1_000, // first re-probe of a host that stopped answering; doubles
  maxDownBackoffMs: 60_000, // at most a minute between probes
  pidsLimit: 1024,
  stopGraceMs: 10_000, // 10 seconds between SIGTERM and SIGKILL
  publishIp: '127.0.0.1',
} as const

export interface DockerHost {
  readonly name: string
  readonly url: string
  readonly maxInstances: number | null
  readonly maxConcurrentStarts: number | null
  readonly labels: Readonly<Record<string, string>>
  readonly publishIp: string
  readonly address: string
  /** What the host offers to sessions; null: learned from the daemon (`GET /info`). */
  readonly nanoCpus: number | null
  readonly memoryBytes: number | null
}

export interface DockerProviderSettings {
  readonly hosts: readonly DockerHost[]
  readonly requestTimeoutMs: number
  readonly startTimeoutMs: number
  readonly pullTimeoutMs: number
  readonly downBackoffMs: number
}

export interface DockerTemplateSettings {
  readonly image: string
  readonly command: readonly string[] | null
  readonly env: Readonly<Record<string, string>>
  readonly port: number
  readonly nanoCpus: number | null
  readonly memoryBytes: number | null
  readonly pidsLimit: number
  readonly shmSizeBytes: number | null
  readonly user: string | null
  readonly readOnlyRootfs: boolean
  readonly capDrop: readonly string[]
  readonly capAdd: readonly string[]
  readonly noNewPrivileges: boolean
  readonly mounts: readonly DockerMount[]
  readonly labels: Readonly<Record<string, string>>
  readonly network: string | null
  readonly pullPolicy: 'ifNotPresent' | 'always' | 'never'
  readonly home: { readonly volume: string; readonly mountPath: string } | null
  readonly hostSelector: Readonly<Record<string, string>>
  readonly stopGraceMs: number
}

function schemaProblems(schema: TSchema, raw: unknown, prefix: string): string[] {
  if (Value.Check(schema, raw)) return []
  const out = [...Value.Errors(schema, raw)].map((e) => `${prefix}${e.path.replaceAll('/', '.')}: ${e.message}`)
  return out.length ? out : [`${prefix}: invalid`]
}

/** Returns the settings, or throws with every problem (each prefixed with its path). */
export function parseDockerProviderSettings(raw: Readonly<Record<string, unknown>>): DockerProviderSettings {
  const problems = schemaProblems(dockerProviderSettingsSchema, raw, 'providers.docker')
  if (problems.length) throw new Error(problems.join('; '))
  const s = raw as Static<typeof dockerProviderSettingsSchema>
  const hosts: DockerHost[] = []
  const seen = new Set<string>()
  for (const [i, h] of (s.hosts ?? [{ name: 'local', url: DOCKER_DEFAULTS.url }]).entries()) {
    let url
    try {
      url = parseDockerUrl(h.url)
    } catch (err) {
      problems.push(`providers.docker.hosts.${i}.url: ${(err as Error).message}`)
      continue
    }
    if (seen.has(h.name)) problems.push(`providers.docker.hosts.${i}.name: "${h.name}" is used twice`)
    seen.add(h.name)
    const hostMemory = h.memory === undefined ? null : parseSize(h.memory)
    if (hostMemory === undefined)
      problems.push(`providers.docker.hosts.${i}.memory: "${String(h.memory)}" is not a size (e.g. 64g)`)
    const publishIp = h.publishIp ?? DOCKER_DEFAULTS.publishIp
    const address = h.address ?? (publishIp === '0.0.0.0' ? (url.kind === 'tcp' ? url.host : '127.0.0.1') : publishIp)
    hosts.push({
      name: h.name,
      url: h.url,
      maxInstances: h.maxInstances ?? null,
      maxConcurrentStarts: h.maxConcurrentStarts ?? null,
      labels: h.labels ?? {},
      publishIp,
      address,
      nanoCpus: h.cpus === undefined ? null : Math.round(h.cpus * 1e9),
      memoryBytes: hostMemory ?? null,
    })
  }
  const dur = (v: number | string | undefined, d: number, key: string): number => {
    if (v === undefined) return d
    const ms = parseDuration(v)
    if (ms === undefined) problems.push(`providers.docker.${key}: "${v}" is not a duration (e.g. 30s)`)
    return ms ?? d
  }
  const requestTimeoutMs = dur(s.requestTimeout, DOCKER_DEFAULTS.requestTimeoutMs, 'requestTimeout')
  const startTimeoutMs = dur(s.startTimeout, DOCKER_DEFAULTS.startTimeoutMs, 'startTimeout')
  const pullTimeoutMs = dur(s.pullTimeout, DOCKER_DEFAULTS.pullTimeoutMs, 'pullTimeout')
  const downBackoffMs = dur(s.downBackoff, DOCKER_DEFAULTS.downBackoffMs, 'downBackoff')
  if (problems.length) throw new Error(problems.join('; '))
  return { hosts, requestTimeoutMs, startTimeoutMs, pullTimeoutMs, downBackoffMs }
}

/**
 * Returns the settings, or the list of problems (each prefixed with `docker.`). `templatePort` is
 * the template's own `port`, used when the docker settings name none.
 */
export function parseDockerTemplateSettings(
  raw: unknown,
  templatePort: number | null,
): { settings: DockerTemplateSettings; problems: [] } | { settings: null; problems: string[] } {
  const problems = schemaProblems(dockerTemplateSettingsSchema, raw, 'docker')
  if (problems.length) return { settings: null, problems }
  const s = raw as DockerTemplateSettingsInput
  const port = s.port ?? templatePort
  if (!port) problems.push("docker.port: the container port is required (here or as the template's port)")
  const memoryBytes = s.memory === undefined ? null : parseSize(s.memory)
  if (memoryBytes === undefined) problems.push(`docker.memory: "${String(s.memory)}" is not a size (e.g. 512m, 2g)`)
  const shmSizeBytes = s.shmSize === undefined ? null : parseSize(s.shmSize)
  if (shmSizeBytes === undefined) problems.push(`docker.shmSize: "${String(s.shmSize)}" is not a size (e.g. 64m)`)
  let stopGraceMs: number = DOCKER_DEFAULTS.stopGraceMs
  if (s.stopGrace !== undefined) {
    const ms = parseDuration(s.stopGrace)
    if (ms === undefined) problems.push(`docker.stopGrace: "${s.stopGrace}" is not a duration (e.g. 10s)`)
    else stopGraceMs = ms
  }
  if (s.home && !/\{\{(userSlug|user)\}\}/.test(s.home.volume)) {
    problems.push('docker.home.volume: must contain {{userSlug}}, so that every user gets a volume of their own')
  }
  for (const [i, m] of (s.mounts ?? []).entries()) {
    if (m.type !== 'tmpfs' && !m.source) problems.push(`docker.mounts.${i}.source: required for a ${m.type} mount`)
    if (m.type === 'bind' && m.source && /(^|\/)docker\.sock$/.test(m.source)) {
      // A session holding the Docker socket is root on the host (docs/docker.md, security).
      problems.push(`docker.mounts.${i}.source: never mount the Docker socket into a session`)
    }
  }
  if (problems.length) return { settings: null, problems }
  return {
    settings: {
      image: s.image,
      command: s.command ?? null,
      env: s.env ?? {},
      port: port!,
      nanoCpus: s.cpus === undefined ? null : Math.round(s.cpus * 1e9),
      memoryBytes: memoryBytes ?? null,
      pidsLimit: s.pidsLimit ?? DOCKER_DEFAULTS.pidsLimit,
      shmSizeBytes: shmSizeBytes ?? null,
      user: s.user ?? null,
      readOnlyRootfs: s.readOnlyRootfs ?? false,
      capDrop: s.capDrop ?? ['ALL'],
      capAdd: s.capAdd ?? [],
      noNewPrivileges: s.noNewPrivileges ?? true,
      mounts: s.mounts ?? [],
      labels: s.labels ?? {},
      network: s.network ?? null,
      pullPolicy: s.pullPolicy ?? 'ifNotPresent',
      home: s.home ?? null,
      hostSelector: s.hostSelector ?? {},
      stopGraceMs,
    },
    problems: [],
  }
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }

/** `1048576`, `512m`, `2g`, `1.5gb` → bytes (binary units, as Docker reads them); undefined when not a size. */
export function parseSize(v: number | string): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 ? v : undefined
  const m = /^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$/i.exec(v.trim())
  if (!m) return undefined
  return Math.round(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!)
}

/**
 * A user id as a Docker name part: lowercase `[a-z0-9-]`, at most 40 characters, then 8 hex
 * characters of the id's SHA-256, so that `Alice` and `alice`, or two ids that slug alike, never
 * share a volume.
 */
export function userSlug(userId: string): string {
  const base =
    userId
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 40) || 'user'
  return `${base}-${createHash('sha256').update(userId).digest('hex').slice(0, 8)}`
}

export function substitute(value: string, tokens: Readonly<Record<string, string>>): string {
  return value.replace(/\{\{(\w+)\}\}/g, (m, name: string) => tokens[name] ?? m)
}
