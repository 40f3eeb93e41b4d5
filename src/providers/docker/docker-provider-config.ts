import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Static, TSchema } from '@sinclair/typebox'
import { parseDuration } from '../../domain/duration.js'
import { parseDockerUrl } from './docker-client.js'
import {
  dockerProviderSettingsSchema,
  dockerTemplateSettingsSchema,
  type dockerTlsSchema,
  type DockerMount,
  type DockerTemplateSettingsInput,
} from './docker-provider-schema.js'
import { settingsProblems } from '../../config/explain.js'

export {
  dockerHostSchema,
  dockerMountSchema,
  dockerProviderSettingsSchema,
  dockerTemplateSettingsSchema,
  dockerTlsSchema,
  type DockerMount,
  type DockerTemplateSettingsInput,
} from './docker-provider-schema.js'

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

/** TLS material read from the files `tls` names. */
export interface DockerTls {
  readonly ca: string | null
  readonly cert: string | null
  readonly key: string | null
  readonly verify: boolean
  readonly serverName: string | null
}

export interface DockerHost {
  readonly name: string
  readonly url: string
  readonly tls: DockerTls | null
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
  /** DeviceRequests: count -1 is all; deviceIds, when given, instead of a count. */
  readonly gpus: {
    readonly count: number
    readonly deviceIds: readonly string[]
    readonly driver: string
    readonly capabilities: readonly string[]
  } | null
  readonly hostSelector: Readonly<Record<string, string>>
  readonly stopGraceMs: number
}

function schemaProblems(schema: TSchema, raw: unknown, prefix: string): string[] {
  return settingsProblems(schema, raw, prefix)
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
    const tls = h.tls ? readTls(h.tls, `providers.docker.hosts.${i}.tls`, problems) : null
    if (tls && url.kind !== 'tcp') problems.push(`providers.docker.hosts.${i}.tls: only for a tcp:// url`)
    hosts.push({
      name: h.name,
      url: h.url,
      tls,
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
      gpus: gpusOf(s.gpus),
      hostSelector: s.hostSelector ?? {},
      stopGraceMs,
    },
    problems: [],
  }
}

function readTls(t: Static<typeof dockerTlsSchema>, path: string, problems: string[]): DockerTls {
  const read = (file: string | undefined, key: string): string | null => {
    if (file === undefined) return null
    try {
      return readFileSync(file, 'utf8')
    } catch (err) {
      problems.push(`${path}.${key}: cannot read "${file}" (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
      return null
    }
  }
  if ((t.cert === undefined) !== (t.key === undefined)) problems.push(`${path}: cert and key go together`)
  return {
    ca: read(t.ca, 'ca'),
    cert: read(t.cert, 'cert'),
    key: read(t.key, 'key'),
    verify: t.verify ?? true,
    serverName: t.serverName ?? null,
  }
}

function gpusOf(g: DockerTemplateSettingsInput['gpus']): DockerTemplateSettings['gpus'] {
  if (g === undefined) return null
  const base = { deviceIds: [] as string[], driver: 'nvidia', capabilities: ['gpu'] }
  if (g === 'all') return { ...base, count: -1 }
  if (typeof g === 'number') return { ...base, count: g }
  return {
    count: g.count === undefined || g.count === 'all' ? -1 : g.count,
    deviceIds: g.deviceIds ?? [],
    driver: g.driver ?? 'nvidia',
    capabilities: g.capabilities ?? ['gpu'],
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

export { substitute } from '../session-env.js'
