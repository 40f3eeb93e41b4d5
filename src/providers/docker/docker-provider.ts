import { createHash } from 'node:crypto'
import { KeyedSerializer } from '../keyed-serializer.js'
import { setTimeout as sleep } from 'node:timers/promises'
import type { TemplateConfig } from '../../config/types.js'
import { ProviderError, ValidationError } from '../../domain/errors.js'
import { isInstanceId } from '../../domain/ids.js'
import {
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type IsolationReport,
  type OperationOptions,
  type Provider,
  type ProviderCapabilities,
  type ProviderContext,
  type ProviderInstance,
} from '../provider.js'
import {
  DockerApiError,
  DockerClient,
  type ContainerInspect,
  type ContainerSummary,
  type VolumeInfo,
} from './docker-client.js'
import {
  DOCKER_DEFAULTS,
  parseDockerProviderSettings,
  parseDockerTemplateSettings,
  substitute,
  userSlug,
  type DockerHost,
  type DockerProviderSettings,
  type DockerTemplateSettings,
} from './docker-provider-config.js'

const NAME = 'docker'
/** Set by the pool when it replaces an instance under the same instanceId (pool-service.ts). */
const LABEL_GENERATION = 'studiopool:generation'
/** Docker-only label on home volumes (`home`), never on containers. */
const DOCKER_LABEL_KIND = 'studiopool.kind'
/** Docker-only labels on containers: what each asked for, so that placement needs no inspect per container. */
const DOCKER_LABEL_CPUS = 'studiopool.request.nanocpus'
const DOCKER_LABEL_MEMORY = 'studiopool.request.memory'
/** Appended to a suspended container's name: Docker labels cannot change after create, names can. */
const SUSPENDED_SUFFIX = '-suspended'
/** Docker's rule for container and volume names. */
const DOCKER_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/
/** How long a create that met a name conflict waits for the other creator's container to appear. */
const ADOPT_WAIT_MS = 10_000
/** `<host name>/<64 hex container id>`. */
const REF_RE = /^([a-z0-9][a-z0-9-]{0,62})\/([0-9a-f]{64})$/

/**
 * studiopool's labels are `studiopool:<key>` (provider.ts); on Docker objects they are written
 * `studiopool.<key>`, Docker's reverse-DNS convention, so that `docker ps --filter
 * label=studiopool.pool=…` reads naturally. Other labels pass unchanged.
 */
export function toDockerLabelKey(key: string): string {
  return key.startsWith('studiopool:') ? `studiopool.${key.slice('studiopool:'.length)}` : key
}

export function fromDockerLabels(labels: Readonly<Record<string, string>> | null | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(labels ?? {})) {
    if (k === DOCKER_LABEL_KIND || k.startsWith('studiopool.request.')) continue
    out[k.startsWith('studiopool.') ? `studiopool:${k.slice('studiopool.'.length)}` : k] = v
  }
  return out
}

/** A counting semaphore: the per-host limit on concurrent starts (moby#42817: many starts at once slow all of them). */
class Semaphore {
  readonly #max: number
  #used = 0
  readonly #waiting: (() => void)[] = []
  constructor(max: number) {
    this.#max = max
  }
  get waiting(): number {
    return this.#waiting.length
  }
  get active(): number {
    return this.#used
  }
  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.#used >= this.#max) {
      await new Promise<void>((resolve, reject) => {
        const wake = (): void => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        }
        const onAbort = (): void => {
          const i = this.#waiting.indexOf(wake)
          if (i >= 0) this.#waiting.splice(i, 1)
          reject(signal!.reason instanceof Error ? signal!.reason : new Error('aborted'))
        }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.#waiting.push(wake)
      })
    } else {
      this.#used++
    }
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.#waiting.shift()
      if (next) next()
      else this.#used--
    }
  }
}

/** A host that could take a new container, with what its live containers of this pool use. */
interface Candidate {
  readonly h: HostState
  readonly count: number
  readonly usedCpus: number
  readonly usedMemory: number
  readonly capacity: { nanoCpus: number; memoryBytes: number } | null
}

/** One Docker Engine host and what the provider knows about it. */
interface HostState {
  readonly host: DockerHost
  readonly client: DockerClient
  readonly starts: Semaphore | null
  /** Creates placed on this host and not finished yet (not in the daemon's list yet), and what they asked for. */
  inflight: number
  inflightCpus: number
  inflightMemory: number
  /** What the host offers to sessions (settings, else the daemon's /info); null until known. */
  capacity: { nanoCpus: number; memoryBytes: number } | null
  /** Live containers of this pool at the last list. */
  live: number
  /** Not answering since (epoch ms), or null. */
  downSince: number | null
  /** Next probe of a down host, epoch ms. */
  retryAt: number
  backoffMs: number
  downReason: string
  /** The instances listed at the last successful list: reported lost while the host is down. */
  lastSeen: Map<string, ProviderInstance>
  /** The managed network, created once per host. */
  network: Promise<{ name: string; subnets: string[] }> | null
  subnets: string[]
}

/**
 * `docker` provider (DESIGN.md contract 4, issue 11): one container per session on one or several
 * Docker Engine hosts, talking to each through {@link DockerClient}.
 *
 * - The container is named after the pool and the instanceId on its host, which makes create
 *   idempotent across server processes: a second create meets a 409 and adopts the first.
 * - Refs are `<host name>/<container id>`; a host's name is part of the ref, so keep it stable.
 * - A container that exits (crash, OOM kill, `docker kill`) is reported `terminated` with the
 *   reason, and never restarted by Docker (restart policy `no`): the pool replaces it under the
 *   same URL, like a spot reclaim. A host that stops answering is marked down; its containers are
 *   reported `terminated` ("host … does not answer") until it answers again, probed with backoff.
 * - Suspend is `docker stop` plus a rename to `<name>-suspended` (labels cannot change after
 *   create; a name can), so that an exited container is told from a suspended one.
 * - Destroy removes the container and its anonymous volumes; named volumes (the per-user home)
 *   are never removed here.
 */
export class DockerProvider implements Provider {
  readonly name = NAME
  readonly capabilities: ProviderCapabilities = { supportsSuspend: true }
  readonly #ctx: ProviderContext
  readonly #settings: DockerProviderSettings
  readonly #hosts: HostState[]
  readonly #byName = new Map<string, HostState>()
  /** Per-instanceId serialization of create/destroy within this server. */
  readonly #locks = new KeyedSerializer()
  /** Short, stable name part for this pool (pool ids may hold characters Docker names refuse). */
  readonly #poolTag: string
  readonly #now: () => number

  constructor(ctx: ProviderContext, deps: { now?: () => number } = {}) {
    try {
      this.#settings = parseDockerProviderSettings(ctx.settings)
    } catch (err) {
      throw new ValidationError('invalid providers.docker settings', [
        { path: 'providers.docker', message: (err as Error).message },
      ])
    }
    this.#ctx = ctx
    this.#now = deps.now ?? Date.now
    this.#poolTag = createHash('sha256').update(ctx.poolId).digest('hex').slice(0, 10)
    this.#hosts = this.#settings.hosts.map((host) => ({
      host,
      client: new DockerClient({ url: host.url, timeoutMs: this.#settings.requestTimeoutMs }),
      starts: host.maxConcurrentStarts ? new Semaphore(host.maxConcurrentStarts) : null,
      inflight: 0,
      inflightCpus: 0,
      inflightMemory: 0,
      capacity:
        host.nanoCpus !== null && host.memoryBytes !== null
          ? { nanoCpus: host.nanoCpus, memoryBytes: host.memoryBytes }
          : null,
      live: 0,
      downSince: null,
      retryAt: 0,
      backoffMs: this.#settings.downBackoffMs,
      downReason: '',
      lastSeen: new Map(),
      network: null,
      subnets: [],
    }))
    for (const h of this.#hosts) this.#byName.set(h.host.name, h)
  }

  /** Timeout of the calls that make, start or stop things. */
  get #slow(): number {
    return this.#settings.startTimeoutMs
  }

  get settings(): DockerProviderSettings {
    return this.#settings
  }

  /** The managed network's name on every host. */
  get networkName(): string {
    return `studiopool-${this.#poolTag}`
  }

  /** Container name of an instance on a host. */
  containerName(instanceId: string): string {
    return `studiopool-${this.#poolTag}-${instanceId}`
  }

  /**
   * Hosts, whether each answers, its live containers at the last look, and its starts under way
   * and waiting for a slot (for readiness details and the dashboard).
   */
  hostStatus(): {
    name: string
    up: boolean
    reason: string | null
    live: number
    starting: number
    waiting: number
  }[] {
    return this.#hosts.map((h) => ({
      name: h.host.name,
      up: h.downSince === null,
      reason: h.downSince === null ? null : h.downReason,
      live: h.live,
      starting: h.starts ? h.starts.active : h.inflight,
      waiting: h.starts ? h.starts.waiting : 0,
    }))
  }

  async init(opts: OperationOptions): Promise<void> {
    // Every host is probed and gets its network now, so that the isolation report names the session
    // subnets. One host down does not stop the server (it is probed again later); all down does.
    const results = await Promise.allSettled(
      this.#hosts.map(async (h) => {
        await this.#onHost(h, (c) => c.ping({ signal: opts.signal }))
        await this.#capacity(h, opts)
        await this.#ensureNetwork(h, null, opts)
      }),
    )
    const failed = results.flatMap((r, i) =>
      r.status === 'rejected' ? [`${this.#hosts[i]!.host.name}: ${(r.reason as Error).message}`] : [],
    )
    for (const f of failed) opts.log.warn(`docker provider: host ${f}`)
    if (failed.length === this.#hosts.length) {
      throw new ProviderError(NAME, `no Docker host answers: ${failed.join('; ')}`, {
        retryable: true,
        code: 'PROVIDER_UNAVAILABLE',
      })
    }
  }

  isolation(): IsolationReport {
    const subnets = [...new Set(this.#hosts.flatMap((h) => h.subnets))]
    return {
      isolated: true,
      sessionsReachLoopback: false,
      sessionNetworks: subnets,
      notes: [
        'docker: each session is a container with its own PID, mount and network namespaces, all capabilities dropped (unless a template adds some), no-new-privileges, a pids limit, and never root unless a template says user: root',
        `docker: sessions share the network ${this.networkName} with inter-container traffic off (com.docker.network.bridge.enable_icc=false), which the daemon enforces only when it manages iptables (dockerd --iptables=true, the default)`,
        'docker: container ports are published on the host address each host names (publishIp, default 127.0.0.1); a session reaches the host only through its network gateway, so the server must not listen on 0.0.0.0 unprotected',
      ],
    }
  }

  validateTemplate(template: TemplateConfig): string[] {
    const parsed = parseDockerTemplateSettings(template.settings, template.port)
    if (!parsed.settings) return parsed.problems
    const s = parsed.settings
    const problems: string[] = []
    if (s.home && template.minFree > 0) {
      problems.push(
        'docker.home: a warm container is made before its user is known and cannot mount their volume; set minFree: 0 on this template',
      )
    }
    const matching = this.#hosts.filter((h) => matchesSelector(h.host, s.hostSelector))
    if (matching.length === 0)
      problems.push(
        `docker.hostSelector: no host in providers.docker.hosts has the labels ${JSON.stringify(s.hostSelector)}`,
      )
    return problems
  }

  async create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance> {
    if (!isInstanceId(spec.id)) throw new ProviderError(NAME, `invalid instance id "${String(spec.id).slice(0, 40)}"`)
    const parsed = parseDockerTemplateSettings(spec.template.settings, spec.template.port)
    if (!parsed.settings)
      throw new ProviderError(NAME, `template "${spec.template.name}": ${parsed.problems.join('; ')}`)
    const settings = parsed.settings
    return this.#locked(spec.id, async () => {
      opts.signal?.throwIfAborted()
      const generation = spec.labels[LABEL_GENERATION]
      // One list per answering host: finds this instance's container wherever it is, and counts.
      const candidates: Candidate[] = []
      for (const h of this.#hosts) {
        if (!this.#usable(h)) continue
        let found: ContainerSummary[]
        try {
          found = await this.#onHost(h, (c) =>
            c.containerList([`${toDockerLabelKey(LABEL_POOL)}=${spec.poolId}`], { signal: opts.signal }),
          )
        } catch (err) {
          if (isUnavailable(err)) continue
          throw err
        }
        let count = 0
        let usedCpus = 0
        let usedMemory = 0
        for (const c of found) {
          const labels = fromDockerLabels(c.Labels)
          const live = isLiveState(c.State)
          if (labels[LABEL_INSTANCE] !== spec.id) {
            if (live) {
              count++
              usedCpus += Number(c.Labels?.[DOCKER_LABEL_CPUS] ?? 0) || 0
              usedMemory += Number(c.Labels?.[DOCKER_LABEL_MEMORY] ?? 0) || 0
            }
            continue
          }
          const sameGeneration = generation === undefined || labels[LABEL_GENERATION] === generation
          const suspended = c.State === 'exited' && c.Names.some((n) => n.endsWith(SUSPENDED_SUFFIX))
          if (sameGeneration && c.State === 'created') {
            // Made but never started: its creator died between the two calls (a server killed mid-create).
            opts.log.info(
              { instanceId: spec.id, host: h.host.name, container: c.Id.slice(0, 12) },
              'docker: starting a container another process created and did not start',
            )
            return this.#startCreated(h, c.Id, spec, opts, false)
          }
          if (sameGeneration && (live || suspended)) return this.#toInstance(h, c, null)
          // An exited container of this instance, or one of an older generation: replaced.
          opts.log.info(
            { instanceId: spec.id, host: h.host.name, container: c.Id.slice(0, 12), state: c.State },
            'docker: removing an earlier container of this instance',
          )
          await this.#onHost(h, (cl) => cl.containerRemove(c.Id, { signal: opts.signal, timeoutMs: this.#slow }))
        }
        if (matchesSelector(h.host, settings.hostSelector)) {
          const capacity =
            settings.nanoCpus || settings.memoryBytes ? await this.#capacity(h, opts).catch(() => null) : null
          candidates.push({ h, count, usedCpus, usedMemory, capacity })
        }
      }
      const h = this.#place(candidates, spec, settings)
      h.inflight++
      h.inflightCpus += settings.nanoCpus ?? 0
      h.inflightMemory += settings.memoryBytes ?? 0
      try {
        const release = h.starts ? await h.starts.acquire(opts.signal) : () => {}
        try {
          return await this.#createOn(h, spec, settings, opts)
        } finally {
          release()
        }
      } finally {
        h.inflight--
        h.inflightCpus -= settings.nanoCpus ?? 0
        h.inflightMemory -= settings.memoryBytes ?? 0
      }
    })
  }

  async describe(refs: readonly string[], opts: OperationOptions): Promise<Map<string, ProviderInstance>> {
    const out = new Map<string, ProviderInstance>()
    const wanted = new Map<HostState, Set<string>>()
    for (const ref of refs) {
      const m = REF_RE.exec(ref)
      const h = m ? this.#byName.get(m[1]!) : undefined
      if (!h) continue
      if (!wanted.has(h)) wanted.set(h, new Set())
      wanted.get(h)!.add(ref)
    }
    await Promise.all(
      [...wanted].map(async ([h, set]) => {
        // One call per host, whatever the number of refs.
        for (const inst of await this.#listHost(h, opts)) if (set.has(inst.ref)) out.set(inst.ref, inst)
      }),
    )
    return out
  }

  async list(opts: OperationOptions): Promise<ProviderInstance[]> {
    const all = (await Promise.all(this.#hosts.map((h) => this.#listHost(h, opts)))).flat()
    // A host that comes back after its sessions were replaced elsewhere still runs the old
    // containers. A container of an instance that has a live container of a newer generation is
    // superseded, as a create removes one on the host it creates on: removed here, so that every
    // instance has one live container (the pool's orphan reaper skips instances it knows).
    const newest = new Map<string, number>()
    for (const i of all) {
      if (i.state === 'terminated') continue
      const g = Number(i.labels[LABEL_GENERATION] ?? 0)
      if (g > (newest.get(i.instanceId) ?? -1)) newest.set(i.instanceId, g)
    }
    const out: ProviderInstance[] = []
    for (const i of all) {
      const g = Number(i.labels[LABEL_GENERATION] ?? 0)
      if (i.state !== 'terminated' && g < (newest.get(i.instanceId) ?? g)) {
        opts.log.info(
          { instanceId: i.instanceId, ref: i.ref, generation: g },
          'docker: removing a container superseded by a newer generation of its instance',
        )
        try {
          await this.destroy(i.ref, opts)
          continue
        } catch (err) {
          opts.log.warn(
            { ref: i.ref, err: (err as Error).message },
            'docker: cannot remove a superseded container; listed as it is',
          )
        }
      }
      out.push(i)
    }
    return out
  }

  async destroy(ref: string, opts: OperationOptions): Promise<void> {
    const target = this.#resolve(ref)
    if (!target) return
    const { h, id } = target
    // A host that does not answer: nothing to do now. When it answers again the container is
    // listed, unknown to the store, and reaped as an orphan; destroy resolves (idempotent).
    const unreachable = (): void => {
      opts.log.warn(
        { ref, host: h.host.name },
        'docker: destroy on a host that does not answer; the container is reaped when it is back',
      )
      h.lastSeen.delete(ref)
    }
    if (!this.#usable(h)) return unreachable()
    let c: ContainerInspect | undefined
    try {
      c = await this.#onHost(h, (cl) => cl.containerInspect(id, { signal: opts.signal }))
    } catch (err) {
      if (isUnavailable(err)) return unreachable()
      throw err
    }
    if (!c || fromDockerLabels(c.Config.Labels)[LABEL_POOL] !== this.#ctx.poolId) return
    const instanceId = fromDockerLabels(c.Config.Labels)[LABEL_INSTANCE] ?? id
    await this.#locked(instanceId, async () => {
      const grace = stopGraceOf(c)
      if (c.State.Running) {
        await this.#onHost(h, (cl) =>
          cl.containerStop(id, Math.ceil(grace / 1000), { signal: opts.signal, timeoutMs: this.#slow }),
        ).catch((err: unknown) => {
          if (!(err instanceof DockerApiError && err.status === 404)) throw err
        })
      }
      await this.#onHost(h, (cl) => cl.containerRemove(id, { signal: opts.signal, timeoutMs: this.#slow }))
      h.lastSeen.delete(ref)
    })
  }

  async stop(ref: string, opts: OperationOptions): Promise<void> {
    const target = this.#resolve(ref)
    if (!target) throw new ProviderError(NAME, `unknown ref "${ref.slice(0, 100)}"`)
    const { h, id } = target
    const c = await this.#onHost(h, (cl) => cl.containerInspect(id, { signal: opts.signal }))
    if (!c) throw new ProviderError(NAME, `container ${id.slice(0, 12)} is not on host ${h.host.name}`)
    const base = c.Name.replace(/^\//, '').replace(new RegExp(`${SUSPENDED_SUFFIX}$`), '')
    // Renamed first: a server that dies between the two calls leaves a running container, which
    // lists as running whatever its name.
    if (!c.Name.endsWith(SUSPENDED_SUFFIX))
      await this.#onHost(h, (cl) => cl.containerRename(id, base + SUSPENDED_SUFFIX, { signal: opts.signal }))
    await this.#onHost(h, (cl) =>
      cl.containerStop(id, Math.ceil(stopGraceOf(c) / 1000), { signal: opts.signal, timeoutMs: this.#slow }),
    )
  }

  async start(ref: string, opts: OperationOptions): Promise<void> {
    const target = this.#resolve(ref)
    if (!target) throw new ProviderError(NAME, `unknown ref "${ref.slice(0, 100)}"`)
    const { h, id } = target
    const c = await this.#onHost(h, (cl) => cl.containerInspect(id, { signal: opts.signal }))
    if (!c) throw new ProviderError(NAME, `container ${id.slice(0, 12)} is not on host ${h.host.name}`)
    const release = h.starts ? await h.starts.acquire(opts.signal) : () => {}
    try {
      await this.#onHost(h, (cl) => cl.containerStart(id, { signal: opts.signal, timeoutMs: this.#slow }))
    } finally {
      release()
    }
    if (c.Name.endsWith(SUSPENDED_SUFFIX)) {
      const base = c.Name.replace(/^\//, '').slice(0, -SUSPENDED_SUFFIX.length)
      await this.#onHost(h, (cl) => cl.containerRename(id, base, { signal: opts.signal })).catch((err: unknown) => {
        // Running is what matters; the name only tells a suspended container from an exited one.
        opts.log.warn({ ref, err: (err as Error).message }, 'docker: started, but could not drop the suspended name')
      })
    }
  }

  /**
   * Home volumes of this pool on every answering host, optionally of one user (for the admin
   * action that lists and deletes a user's volumes).
   */
  async listHomeVolumes(
    opts: OperationOptions,
    ownerId?: string,
  ): Promise<{ host: string; name: string; owner: string; createdAt: string | null }[]> {
    const out: { host: string; name: string; owner: string; createdAt: string | null }[] = []
    for (const h of this.#hosts) {
      if (!this.#usable(h)) continue
      const filters = [`${toDockerLabelKey(LABEL_POOL)}=${this.#ctx.poolId}`, `${DOCKER_LABEL_KIND}=home`]
      if (ownerId !== undefined) filters.push(`${toDockerLabelKey(LABEL_OWNER)}=${ownerId}`)
      const vols: VolumeInfo[] = await this.#onHost(h, (c) => c.volumeList(filters, { signal: opts.signal }))
      for (const v of vols)
        out.push({
          host: h.host.name,
          name: v.Name,
          owner: fromDockerLabels(v.Labels)[LABEL_OWNER] ?? '',
          createdAt: v.CreatedAt ?? null,
        })
    }
    return out
  }

  /** Deletes one home volume (an explicit admin action; a session using it makes this fail). */
  async deleteHomeVolume(host: string, name: string, opts: OperationOptions): Promise<void> {
    const h = this.#byName.get(host)
    if (!h) throw new ProviderError(NAME, `no Docker host named "${host}"`)
    const v = await this.#onHost(h, (c) => c.volumeInspect(name, { signal: opts.signal }))
    if (!v) return
    const labels = v.Labels ?? {}
    if (labels[toDockerLabelKey(LABEL_POOL)] !== this.#ctx.poolId || labels[DOCKER_LABEL_KIND] !== 'home') {
      throw new ProviderError(NAME, `volume "${name}" on ${host} is not a home volume of this pool`)
    }
    await this.#onHost(h, (c) => c.volumeRemove(name, { signal: opts.signal }))
  }

  async close(): Promise<void> {
    // Containers are left running: a restarted server finds them with list().
    await Promise.all(this.#hosts.map((h) => h.client.close()))
  }

  // --- internals -------------------------------------------------------------------------

  async #createOn(
    h: HostState,
    spec: InstanceSpec,
    s: DockerTemplateSettings,
    opts: OperationOptions,
  ): Promise<ProviderInstance> {
    const signal = opts.signal
    await this.#ensureImage(h, spec, s, opts)
    const network = await this.#ensureNetwork(h, s.network, opts)
    const tokens: Record<string, string> = {
      basePath: spec.basePath,
      instanceId: spec.id,
      appToken: spec.appToken,
      user: spec.ownerId ?? '',
      userSlug: spec.ownerId ? userSlug(spec.ownerId) : '',
      sessionUrl: spec.sessionUrl,
      port: String(s.port),
    }
    const mounts: unknown[] = []
    if (s.home) {
      if (!spec.ownerId) {
        throw new ProviderError(
          NAME,
          `template "${spec.template.name}" has docker.home, and a session with a home volume needs its user at create (minFree: 0)`,
        )
      }
      const volume = substitute(s.home.volume, tokens)
      if (!DOCKER_NAME_RE.test(volume))
        throw new ProviderError(
          NAME,
          `docker.home.volume: "${volume}" is not a valid Docker volume name (use {{userSlug}})`,
        )
      // Created on first use and kept; the daemon returns an existing volume unchanged.
      await this.#onHost(h, (c) =>
        c.volumeCreate(
          volume,
          {
            [toDockerLabelKey(LABEL_POOL)]: spec.poolId,
            [toDockerLabelKey(LABEL_OWNER)]: spec.ownerId!,
            [DOCKER_LABEL_KIND]: 'home',
          },
          { signal, timeoutMs: this.#slow },
        ),
      )
      mounts.push({ Type: 'volume', Source: volume, Target: s.home.mountPath })
    }
    for (const m of s.mounts) {
      if (m.type === 'tmpfs') mounts.push({ Type: 'tmpfs', Target: m.target })
      else
        mounts.push({
          Type: m.type,
          Source: substitute(m.source!, tokens),
          Target: m.target,
          ReadOnly: m.readOnly ?? false,
        })
    }
    const env: Record<string, string> = {}
    for (const [k, v] of Object.entries(s.env)) env[k] = substitute(v, tokens)
    Object.assign(env, {
      PORT: String(s.port),
      BASE_PATH: spec.basePath,
      STUDIOPOOL_POOL: spec.poolId,
      STUDIOPOOL_INSTANCE_ID: spec.id,
      STUDIOPOOL_TEMPLATE: spec.template.name,
      STUDIOPOOL_SESSION_URL: spec.sessionUrl,
      STUDIOPOOL_PROGRESS_URL: spec.progressUrl,
      STUDIOPOOL_PROGRESS_TOKEN: spec.progressToken,
    })
    // Known at create only for a cold start; a warm instance learns its user from X-Forwarded-User.
    if (spec.ownerId) env.STUDIOPOOL_USER = spec.ownerId
    const labels: Record<string, string> = {}
    for (const [k, v] of Object.entries({
      ...s.labels,
      ...spec.labels,
      [LABEL_POOL]: spec.poolId,
      [LABEL_INSTANCE]: spec.id,
      [LABEL_TEMPLATE]: spec.template.name,
    })) {
      labels[toDockerLabelKey(k)] = v
    }
    if (s.nanoCpus) labels[DOCKER_LABEL_CPUS] = String(s.nanoCpus)
    if (s.memoryBytes) labels[DOCKER_LABEL_MEMORY] = String(s.memoryBytes)
    const portKey = `${s.port}/tcp`
    const body = {
      Image: s.image,
      ...(s.command ? { Cmd: s.command.map((a) => substitute(a, tokens)) } : {}),
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ...(s.user ? { User: s.user } : {}),
      Labels: labels,
      ExposedPorts: { [portKey]: {} },
      StopTimeout: Math.ceil(s.stopGraceMs / 1000),
      HostConfig: {
        PortBindings: { [portKey]: [{ HostIp: h.host.publishIp, HostPort: '' }] },
        NetworkMode: network,
        CapDrop: s.capDrop,
        CapAdd: s.capAdd,
        SecurityOpt: s.noNewPrivileges ? ['no-new-privileges'] : [],
        PidsLimit: s.pidsLimit,
        ...(s.memoryBytes ? { Memory: s.memoryBytes, MemorySwap: s.memoryBytes } : {}),
        ...(s.nanoCpus ? { NanoCpus: s.nanoCpus } : {}),
        ...(s.shmSizeBytes ? { ShmSize: s.shmSizeBytes } : {}),
        ReadonlyRootfs: s.readOnlyRootfs,
        Mounts: mounts,
        // A session that exits is an instance lost, which the pool replaces; Docker never restarts it.
        RestartPolicy: { Name: 'no' },
      },
    }
    const name = this.containerName(spec.id)
    let id: string
    try {
      id = await this.#onHost(h, (c) => c.containerCreate(name, body, { signal, timeoutMs: this.#slow }))
    } catch (err) {
      if (!(err instanceof DockerApiError && err.status === 409)) throw err
      // Another server process created it a moment ago (the name is the lock): adopt it. The daemon
      // reserves the name before the container exists, so a concurrent inspect may briefly miss it.
      let other: ContainerInspect | undefined
      const deadline = this.#now() + ADOPT_WAIT_MS
      for (;;) {
        other = await this.#onHost(h, (c) => c.containerInspect(name, { signal }))
        if (other || this.#now() > deadline) break
        await sleep(50, undefined, { signal })
      }
      if (!other || fromDockerLabels(other.Config.Labels)[LABEL_INSTANCE] !== spec.id) throw err
      opts.log.info(
        { instanceId: spec.id, host: h.host.name },
        'docker: adopting the container another process created',
      )
      id = other.Id
    }
    const inst = await this.#startCreated(h, id, spec, opts)
    opts.log.info({ instanceId: spec.id, host: h.host.name, container: id.slice(0, 12) }, 'docker: container started')
    return inst
  }

  /** Starts a created container (in a start slot); one that cannot start is removed. */
  async #startCreated(
    h: HostState,
    id: string,
    spec: InstanceSpec,
    opts: OperationOptions,
    inSlot = true,
  ): Promise<ProviderInstance> {
    const signal = opts.signal
    const release = !inSlot && h.starts ? await h.starts.acquire(signal) : () => {}
    try {
      await this.#onHost(h, (c) => c.containerStart(id, { signal, timeoutMs: this.#slow }))
    } catch (err) {
      await this.#onHost(h, (c) => c.containerRemove(id, { timeoutMs: this.#slow })).catch(() => {})
      throw err instanceof DockerApiError
        ? new ProviderError(NAME, `cannot start the container of ${spec.id} on ${h.host.name}: ${err.message}`, {
            cause: err,
            retryable: err.retryable,
          })
        : err
    } finally {
      release()
    }
    const inspected = await this.#onHost(h, (c) => c.containerInspect(id, { signal }))
    if (!inspected)
      throw new ProviderError(NAME, `the container of ${spec.id} vanished right after it started on ${h.host.name}`, {
        retryable: true,
      })
    return this.#inspectToInstance(h, inspected)
  }

  /** The image is there (pulled when the policy says so), or a clear problem naming it. */
  async #ensureImage(
    h: HostState,
    spec: InstanceSpec,
    s: DockerTemplateSettings,
    opts: OperationOptions,
  ): Promise<void> {
    let image =
      s.pullPolicy === 'always'
        ? undefined
        : await this.#onHost(h, (c) => c.imageInspect(s.image, { signal: opts.signal }))
    if (!image) {
      if (s.pullPolicy === 'never') {
        throw new ProviderError(
          NAME,
          `template "${spec.template.name}": image "${s.image}" is not on Docker host ${h.host.name}, and its pullPolicy is never`,
        )
      }
      opts.log.info({ image: s.image, host: h.host.name }, 'docker: pulling image')
      try {
        await this.#onHost(h, (c) =>
          c.imagePull(s.image, () => {}, { signal: opts.signal, timeoutMs: this.#settings.pullTimeoutMs }),
        )
      } catch (err) {
        throw new ProviderError(
          NAME,
          `template "${spec.template.name}": cannot pull image "${s.image}" on ${h.host.name}: ${(err as Error).message}`,
          {
            cause: err,
            retryable: isUnavailable(err),
          },
        )
      }
      image = await this.#onHost(h, (c) => c.imageInspect(s.image, { signal: opts.signal }))
      if (!image)
        throw new ProviderError(
          NAME,
          `template "${spec.template.name}": image "${s.image}" is still missing on ${h.host.name} after a pull`,
        )
    }
    if (!s.user && isRootUser(image.Config?.User)) {
      // DESIGN.md: no session code runs as root unless a template says so in words.
      throw new ProviderError(
        NAME,
        `template "${spec.template.name}": image "${s.image}" runs as root; set docker.user (for example "1000:1000"), or user: root to allow it`,
      )
    }
  }

  /** The network sessions join: the template's own, or the managed one (created on first use). */
  async #ensureNetwork(h: HostState, named: string | null, opts: OperationOptions): Promise<string> {
    if (named) return named
    if (!h.network) {
      const name = this.networkName
      h.network = (async () => {
        let net = await this.#onHost(h, (c) => c.networkInspect(name, { signal: opts.signal }))
        if (!net) {
          try {
            await this.#onHost(h, (c) =>
              c.networkCreate(
                {
                  Name: name,
                  CheckDuplicate: true,
                  Driver: 'bridge',
                  Options: { 'com.docker.network.bridge.enable_icc': 'false' },
                  Labels: { [toDockerLabelKey(LABEL_POOL)]: this.#ctx.poolId },
                },
                { signal: opts.signal, timeoutMs: this.#slow },
              ),
            )
          } catch (err) {
            if (!(err instanceof DockerApiError && err.status === 409)) throw err
          }
          net = await this.#onHost(h, (c) => c.networkInspect(name, { signal: opts.signal }))
          if (!net)
            throw new ProviderError(NAME, `network ${name} vanished right after it was created on ${h.host.name}`, {
              retryable: true,
            })
        }
        if (net.Options?.['com.docker.network.bridge.enable_icc'] !== 'false') {
          opts.log.warn(
            { network: name, host: h.host.name },
            'docker: the managed network lets containers talk to each other (enable_icc is not false); recreate it',
          )
        }
        const subnets = (net.IPAM.Config ?? []).flatMap((c) => (c.Subnet ? [c.Subnet] : []))
        h.subnets = subnets
        return { name, subnets }
      })()
      h.network.catch(() => {
        h.network = null
      })
    }
    return (await h.network).name
  }

  /**
   * The host with the most free slots among the candidates where the template's CPUs and memory
   * fit; throws when none can take one more.
   */
  #place(candidates: readonly Candidate[], spec: InstanceSpec, s: DockerTemplateSettings): HostState {
    let best: { h: HostState; free: number; load: number } | null = null
    for (const { h, count, usedCpus, usedMemory, capacity } of candidates) {
      const load = count + h.inflight
      h.live = count
      const free = h.host.maxInstances === null ? Number.POSITIVE_INFINITY : h.host.maxInstances - load
      if (free <= 0) continue
      if (capacity && s.nanoCpus && usedCpus + h.inflightCpus + s.nanoCpus > capacity.nanoCpus) continue
      if (capacity && s.memoryBytes && usedMemory + h.inflightMemory + s.memoryBytes > capacity.memoryBytes) continue
      // Most free slots first; among unlimited (or equal) hosts, the least loaded; then file order.
      if (!best || free > best.free || (free === best.free && load < best.load)) best = { h, free, load }
    }
    if (!best) {
      const down = this.#hosts.filter((h) => h.downSince !== null).map((h) => h.host.name)
      throw new ProviderError(
        NAME,
        `no Docker host can take a container of template "${spec.template.name}"` +
          (down.length ? ` (not answering: ${down.join(', ')})` : ' (all full: instances, CPUs or memory)'),
        { retryable: true, code: 'PROVIDER_UNAVAILABLE' },
      )
    }
    return best.h
  }

  /** What the host offers to sessions: its settings, else what the daemon reports (asked once). */
  async #capacity(h: HostState, opts: OperationOptions): Promise<{ nanoCpus: number; memoryBytes: number }> {
    if (!h.capacity) {
      const info = await this.#onHost(h, (c) => c.info({ signal: opts.signal }))
      h.capacity = { nanoCpus: h.host.nanoCpus ?? info.NCPU * 1e9, memoryBytes: h.host.memoryBytes ?? info.MemTotal }
    }
    return h.capacity
  }

  /** The pool's containers on one host, or (host down) what it last had, as lost. */
  async #listHost(h: HostState, opts: OperationOptions): Promise<ProviderInstance[]> {
    if (this.#usable(h)) {
      try {
        const found = await this.#onHost(h, (c) =>
          c.containerList([`${toDockerLabelKey(LABEL_POOL)}=${this.#ctx.poolId}`], { signal: opts.signal }),
        )
        const out: ProviderInstance[] = []
        for (const c of found) {
          // Exited containers are few (the pool destroys them); for them the reason needs an inspect.
          const detail =
            c.State === 'exited' || c.State === 'dead'
              ? await this.#onHost(h, (cl) => cl.containerInspect(c.Id, { signal: opts.signal }))
              : undefined
          out.push(this.#toInstance(h, c, detail ?? null))
        }
        h.live = out.filter((i) => i.state === 'running' || i.state === 'pending').length
        h.lastSeen = new Map(out.map((i) => [i.ref, i]))
        return out
      } catch (err) {
        if (!isUnavailable(err)) throw err
      }
    }
    const reason = `Docker host ${h.host.name} does not answer (${h.downReason})`
    return [...h.lastSeen.values()].map((i) => ({ ...i, state: 'terminated' as const, address: null, message: reason }))
  }

  #toInstance(h: HostState, c: ContainerSummary, detail: ContainerInspect | null): ProviderInstance {
    const labels = fromDockerLabels(c.Labels)
    const port = (c.Ports ?? []).find((p) => p.PublicPort && p.Type === 'tcp')
    const suspended = c.Names.some((n) => n.endsWith(SUSPENDED_SUFFIX))
    const state = mapState(c.State, suspended)
    const message = state === 'terminated' ? exitReason(c.State, detail) : undefined
    return {
      ref: `${h.host.name}/${c.Id}`,
      instanceId: labels[LABEL_INSTANCE] ?? '',
      template: labels[LABEL_TEMPLATE] ?? '',
      state,
      address: state === 'running' && port ? `http://${formatHost(h.host.address)}:${port.PublicPort}` : null,
      labels,
      createdAt: c.Created * 1000,
      ...(message ? { message } : {}),
    }
  }

  #inspectToInstance(h: HostState, c: ContainerInspect): ProviderInstance {
    const labels = fromDockerLabels(c.Config.Labels)
    const binding = Object.values(c.NetworkSettings.Ports ?? {}).flatMap((b) => b ?? [])[0]
    const state = mapState(c.State.Status, c.Name.endsWith(SUSPENDED_SUFFIX))
    const message = state === 'terminated' ? exitReason(c.State.Status, c) : undefined
    const inst: ProviderInstance = {
      ref: `${h.host.name}/${c.Id}`,
      instanceId: labels[LABEL_INSTANCE] ?? '',
      template: labels[LABEL_TEMPLATE] ?? '',
      state,
      address: state === 'running' && binding ? `http://${formatHost(h.host.address)}:${binding.HostPort}` : null,
      labels,
      createdAt: Date.parse(c.Created) || null,
      ...(message ? { message } : {}),
    }
    h.lastSeen.set(inst.ref, inst)
    return inst
  }

  #resolve(ref: string): { h: HostState; id: string } | null {
    const m = REF_RE.exec(ref)
    const h = m ? this.#byName.get(m[1]!) : undefined
    return h ? { h, id: m![2]! } : null
  }

  /** Answering, or due for a probe. */
  #usable(h: HostState): boolean {
    return h.downSince === null || this.#now() >= h.retryAt
  }

  /** Runs one call on a host, marking it down when the daemon is not reached and up when it answers. */
  async #onHost<T>(h: HostState, fn: (c: DockerClient) => Promise<T>): Promise<T> {
    try {
      const v = await fn(h.client)
      if (h.downSince !== null) {
        this.#ctx.log.info({ host: h.host.name, downForMs: this.#now() - h.downSince }, 'docker: host answers again')
        h.downSince = null
        h.backoffMs = this.#settings.downBackoffMs
      }
      return v
    } catch (err) {
      if (err instanceof DockerApiError && err.status === 0) {
        const now = this.#now()
        if (h.downSince === null) {
          h.downSince = now
          h.backoffMs = this.#settings.downBackoffMs
          this.#ctx.log.warn(
            { host: h.host.name, err: err.message },
            'docker: host does not answer; its sessions are lost until it is back',
          )
        } else {
          h.backoffMs = Math.min(h.backoffMs * 2, DOCKER_DEFAULTS.maxDownBackoffMs)
        }
        h.retryAt = now + h.backoffMs
        h.downReason = err.message.replace(/^docker: /, '')
      }
      throw err
    }
  }

  #locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.#locks.run(key, fn)
  }
}

function isUnavailable(err: unknown): boolean {
  return err instanceof DockerApiError && err.status === 0
}

function isLiveState(state: string): boolean {
  return state === 'running' || state === 'created' || state === 'restarting' || state === 'paused'
}

function mapState(state: string, suspended: boolean): ProviderInstance['state'] {
  switch (state) {
    case 'running':
      return 'running'
    case 'created':
    case 'restarting':
      return 'pending'
    case 'paused':
      return 'stopped'
    case 'exited':
      return suspended ? 'stopped' : 'terminated'
    // dead, removing, and anything unknown: gone or going.
    default:
      return 'terminated'
  }
}

/** Why a container is no longer running, in words the user can read on the session's page. */
function exitReason(state: string, c: ContainerInspect | null): string {
  if (!c) return `the container is ${state}`
  const s = c.State
  if (s.OOMKilled) {
    const limit = c.HostConfig.Memory ? ` (memory limit ${Math.round(c.HostConfig.Memory / 1024 / 1024)} MiB)` : ''
    return `the container was killed: out of memory${limit}`
  }
  if (s.Error) return `the container failed: ${s.Error.slice(0, 300)}`
  if (s.ExitCode > 128) {
    const sig = s.ExitCode - 128
    return `the container was killed by signal ${sig}${sig === 9 ? ' (SIGKILL)' : sig === 15 ? ' (SIGTERM)' : ''}`
  }
  return `the container exited with code ${s.ExitCode}`
}

function matchesSelector(host: DockerHost, selector: Readonly<Record<string, string>>): boolean {
  return Object.entries(selector).every(([k, v]) => host.labels[k] === v)
}

function isRootUser(user: string | undefined): boolean {
  const name = (user ?? '').split(':')[0]!.trim()
  return name === '' || name === 'root' || name === '0'
}

function stopGraceOf(c: ContainerInspect): number {
  const t = c.Config.StopTimeout
  return typeof t === 'number' ? t * 1000 : DOCKER_DEFAULTS.stopGraceMs
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}

export function createDockerProvider(ctx: ProviderContext): DockerProvider {
  return new DockerProvider(ctx)
}
