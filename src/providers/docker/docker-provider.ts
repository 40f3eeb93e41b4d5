import { createHash } from 'node:crypto'
import type { TemplateConfig } from '../../config/types.js'
import { ProviderError, ValidationError } from '../../domain/errors.js'
import { isInstanceId } from '../../domain/ids.js'
import { KeyedSerializer } from '../keyed-serializer.js'
import {
  LABEL_INSTANCE,
  LABEL_POOL,
  type HomeList,
  type InstanceSpec,
  type IsolationReport,
  type OperationOptions,
  type Provider,
  type ProviderCapabilities,
  type ProviderContext,
  type ProviderInstance,
} from '../provider.js'
import { DockerApiError, type ContainerInspect } from './docker-client.js'
import { DockerCreator } from './docker-create.js'
import { DockerHosts, isUnavailable, matchesSelector, type HostState, type HostStatus } from './docker-hosts.js'
import { deleteHomeVolume, listHomeVolumes, type HomeVolume } from './docker-home-volumes.js'
import { stopGraceOf, summaryToInstance } from './docker-instances.js'
import { fromDockerLabels, LABEL_GENERATION, SUSPENDED_SUFFIX, toDockerLabelKey } from './docker-labels.js'
import {
  parseDockerProviderSettings,
  parseDockerTemplateSettings,
  type DockerProviderSettings,
} from './docker-provider-config.js'

export { toDockerLabelKey, fromDockerLabels } from './docker-labels.js'

const NAME = 'docker'

/**
 * `docker` provider (architecture.md contract 4, issue 11): one container per session on one or several
 * Docker Engine hosts ({@link DockerHosts}: a client each, down/up with backoff, placement).
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
 *   are never removed here, only by {@link DockerProvider.deleteHome}.
 */
export class DockerProvider implements Provider {
  readonly name = NAME
  readonly capabilities: ProviderCapabilities = { supportsSuspend: true }
  readonly #ctx: ProviderContext
  readonly #settings: DockerProviderSettings
  readonly #hosts: DockerHosts
  readonly #creator: DockerCreator
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
    this.#hosts = new DockerHosts(this.#settings, {
      poolId: ctx.poolId,
      poolTag: this.#poolTag,
      log: ctx.log,
      now: this.#now,
    })
    this.#creator = new DockerCreator(this.#hosts, this.#settings, {
      containerName: (id) => this.containerName(id),
      now: this.#now,
    })
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
    return this.#hosts.networkName
  }

  /** Container name of an instance on a host. */
  containerName(instanceId: string): string {
    return `studiopool-${this.#poolTag}-${instanceId}`
  }

  /**
   * Hosts, whether each answers, its live containers at the last look, and its starts under way
   * and waiting for a slot (for readiness details and the dashboard).
   */
  hostStatus(): HostStatus[] {
    return this.#hosts.status()
  }

  async init(opts: OperationOptions): Promise<void> {
    // Every host is probed and gets its network now, so that the isolation report names the session
    // subnets. One host down does not stop the server (it is probed again later); all down does.
    const all = this.#hosts.all
    const results = await Promise.allSettled(
      all.map(async (h) => {
        await this.#hosts.onHost(h, (c) => c.ping({ signal: opts.signal }))
        await this.#hosts.capacity(h, opts)
        await this.#hosts.ensureNetwork(h, null, opts)
      }),
    )
    const failed = results.flatMap((r, i) =>
      r.status === 'rejected' ? [`${all[i]!.host.name}: ${(r.reason as Error).message}`] : [],
    )
    for (const f of failed) opts.log.warn(`docker provider: host ${f}`)
    if (failed.length === all.length) {
      throw new ProviderError(NAME, `no Docker host answers: ${failed.join('; ')}`, {
        retryable: true,
        code: 'PROVIDER_UNAVAILABLE',
      })
    }
  }

  isolation(): IsolationReport {
    return {
      isolated: true,
      sessionsReachLoopback: false,
      sessionNetworks: this.#hosts.subnets(),
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
    if (!this.#hosts.all.some((h) => matchesSelector(h.host, s.hostSelector)))
      problems.push(
        `docker.hostSelector: no host in providers.docker.hosts has the labels ${JSON.stringify(s.hostSelector)}`,
      )
    return problems
  }

  /**
   * The image of a `pullPolicy: never` template must be on at least one answering host that its
   * selector allows (issue 11: TEMPLATE_UNAVAILABLE naming the image). Hosts that do not answer
   * are skipped: they are marked down and probed back, not a template problem.
   */
  async checkTemplate(template: TemplateConfig, opts: OperationOptions): Promise<string[]> {
    const s = parseDockerTemplateSettings(template.settings, template.port).settings
    if (!s || s.pullPolicy !== 'never') return []
    const hosts = this.#hosts.all.filter((h) => h.downSince === null && matchesSelector(h.host, s.hostSelector))
    let answered = 0
    for (const h of hosts) {
      try {
        const image = await h.client.imageInspect(s.image, { signal: opts.signal })
        answered++
        if (image) return []
      } catch {
        // not answering: skipped (see above)
      }
    }
    if (answered === 0) return []
    return [
      `image "${s.image}" is not on any Docker host (${hosts.map((h) => h.host.name).join(', ')}), and its pullPolicy is never`,
    ]
  }

  async create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance> {
    if (!isInstanceId(spec.id)) throw new ProviderError(NAME, `invalid instance id "${String(spec.id).slice(0, 40)}"`)
    const parsed = parseDockerTemplateSettings(spec.template.settings, spec.template.port)
    if (!parsed.settings)
      throw new ProviderError(NAME, `template "${spec.template.name}": ${parsed.problems.join('; ')}`, {
        kind: 'config',
      })
    const settings = parsed.settings
    return this.#locked(spec.id, () => this.#creator.create(spec, settings, opts))
  }

  async describe(refs: readonly string[], opts: OperationOptions): Promise<Map<string, ProviderInstance>> {
    const out = new Map<string, ProviderInstance>()
    const wanted = new Map<HostState, Set<string>>()
    for (const ref of refs) {
      const t = this.#hosts.resolve(ref)
      if (!t) continue
      if (!wanted.has(t.h)) wanted.set(t.h, new Set())
      wanted.get(t.h)!.add(ref)
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
    const all = (await Promise.all(this.#hosts.all.map((h) => this.#listHost(h, opts)))).flat()
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
    const target = this.#hosts.resolve(ref)
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
    if (!this.#hosts.usable(h)) return unreachable()
    let c: ContainerInspect | undefined
    try {
      c = await this.#hosts.onHost(h, (cl) => cl.containerInspect(id, { signal: opts.signal }))
    } catch (err) {
      if (isUnavailable(err)) return unreachable()
      throw err
    }
    if (!c || fromDockerLabels(c.Config.Labels)[LABEL_POOL] !== this.#ctx.poolId) return
    const instanceId = fromDockerLabels(c.Config.Labels)[LABEL_INSTANCE] ?? id
    await this.#locked(instanceId, async () => {
      if (c.State.Running) {
        await this.#hosts
          .onHost(h, (cl) =>
            cl.containerStop(id, Math.ceil(stopGraceOf(c) / 1000), { signal: opts.signal, timeoutMs: this.#slow }),
          )
          .catch((err: unknown) => {
            if (!(err instanceof DockerApiError && err.status === 404)) throw err
          })
      }
      await this.#hosts.onHost(h, (cl) => cl.containerRemove(id, { signal: opts.signal, timeoutMs: this.#slow }))
      h.lastSeen.delete(ref)
    })
  }

  async stop(ref: string, opts: OperationOptions): Promise<void> {
    const { h, id, c } = await this.#inspectRef(ref, opts)
    const base = c.Name.replace(/^\//, '').replace(new RegExp(`${SUSPENDED_SUFFIX}$`), '')
    // Renamed first: a server that dies between the two calls leaves a running container, which
    // lists as running whatever its name.
    if (!c.Name.endsWith(SUSPENDED_SUFFIX))
      await this.#hosts.onHost(h, (cl) => cl.containerRename(id, base + SUSPENDED_SUFFIX, { signal: opts.signal }))
    await this.#hosts.onHost(h, (cl) =>
      cl.containerStop(id, Math.ceil(stopGraceOf(c) / 1000), { signal: opts.signal, timeoutMs: this.#slow }),
    )
  }

  async start(ref: string, opts: OperationOptions): Promise<void> {
    const { h, id, c } = await this.#inspectRef(ref, opts)
    const release = h.starts ? await h.starts.acquire(opts.signal) : () => {}
    try {
      await this.#hosts.onHost(h, (cl) => cl.containerStart(id, { signal: opts.signal, timeoutMs: this.#slow }))
    } finally {
      release()
    }
    if (c.Name.endsWith(SUSPENDED_SUFFIX)) {
      const base = c.Name.replace(/^\//, '').slice(0, -SUSPENDED_SUFFIX.length)
      await this.#hosts
        .onHost(h, (cl) => cl.containerRename(id, base, { signal: opts.signal }))
        .catch((err: unknown) => {
          // Running is what matters; the name only tells a suspended container from an exited one.
          opts.log.warn({ ref, err: (err as Error).message }, 'docker: started, but could not drop the suspended name')
        })
    }
  }

  async #inspectRef(ref: string, opts: OperationOptions): Promise<{ h: HostState; id: string; c: ContainerInspect }> {
    const target = this.#hosts.resolve(ref)
    if (!target) throw new ProviderError(NAME, `unknown ref "${ref.slice(0, 100)}"`)
    const { h, id } = target
    const c = await this.#hosts.onHost(h, (cl) => cl.containerInspect(id, { signal: opts.signal }))
    if (!c) throw new ProviderError(NAME, `container ${id.slice(0, 12)} is not on host ${h.host.name}`)
    return { h, id, c }
  }

  /** Home volumes of this pool on every answering host, optionally of one user. */
  async listHomeVolumes(opts: OperationOptions, ownerId?: string): Promise<HomeVolume[]> {
    return (await listHomeVolumes(this.#hosts, this.#ctx.poolId, opts, ownerId)).volumes
  }

  /** Deletes one home volume (an explicit admin action; a session using it makes this fail). */
  async deleteHomeVolume(host: string, name: string, opts: OperationOptions): Promise<void> {
    await deleteHomeVolume(this.#hosts, this.#ctx.poolId, host, name, opts)
  }

  /** Provider.listHomes: refs are `<host>/<volume name>`. */
  async listHomes(opts: OperationOptions, ownerId?: string): Promise<HomeList> {
    const { volumes, unreachable } = await listHomeVolumes(this.#hosts, this.#ctx.poolId, opts, ownerId)
    return {
      homes: volumes.map((v) => ({
        ref: `${v.host}/${v.name}`,
        owner: v.owner,
        createdAt: v.createdAt,
        where: `volume ${v.name} on Docker host ${v.host}`,
      })),
      unreachable: unreachable.map((h) => `Docker host ${h}`),
    }
  }

  /** Provider.deleteHome: `absent` when there is no such volume, `in-use` while a container mounts it. */
  async deleteHome(ref: string, opts: OperationOptions): Promise<'deleted' | 'absent' | 'in-use'> {
    const slash = ref.indexOf('/')
    if (slash <= 0) return 'absent'
    try {
      const deleted = await deleteHomeVolume(
        this.#hosts,
        this.#ctx.poolId,
        ref.slice(0, slash),
        ref.slice(slash + 1),
        opts,
      )
      return deleted ? 'deleted' : 'absent'
    } catch (err) {
      if (err instanceof DockerApiError && err.status === 409) return 'in-use'
      throw err
    }
  }

  async close(): Promise<void> {
    // Containers are left running: a restarted server finds them with list().
    await this.#hosts.close()
  }

  // --- internals -------------------------------------------------------------------------

  /** The pool's containers on one host, or (host down) what it last had, as lost. */
  async #listHost(h: HostState, opts: OperationOptions): Promise<ProviderInstance[]> {
    if (this.#hosts.usable(h)) {
      try {
        const found = await this.#hosts.onHost(h, (c) =>
          c.containerList([`${toDockerLabelKey(LABEL_POOL)}=${this.#ctx.poolId}`], { signal: opts.signal }),
        )
        const out: ProviderInstance[] = []
        for (const c of found) {
          // Exited containers are few (the pool destroys them); for them the reason needs an inspect.
          const detail =
            c.State === 'exited' || c.State === 'dead'
              ? await this.#hosts.onHost(h, (cl) => cl.containerInspect(c.Id, { signal: opts.signal }))
              : undefined
          out.push(summaryToInstance(h, c, detail ?? null))
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

  #locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.#locks.run(key, fn)
  }
}

export function createDockerProvider(ctx: ProviderContext): DockerProvider {
  return new DockerProvider(ctx)
}
