import { setTimeout as sleep } from 'node:timers/promises'
import { ProviderError } from '../../domain/errors.js'
import {
  LABEL_INSTANCE,
  LABEL_POOL,
  type InstanceSpec,
  type OperationOptions,
  type ProviderInstance,
} from '../provider.js'
import { DockerApiError, type ContainerInspect, type ContainerSummary } from './docker-client.js'
import { containerBody, containerTokens } from './docker-container-body.js'
import { isUnavailable, matchesSelector, type Candidate, type DockerHosts, type HostState } from './docker-hosts.js'
import { ensureHomeVolume } from './docker-home-volumes.js'
import { ensureImage } from './docker-images.js'
import { inspectToInstance, isLiveState, summaryToInstance } from './docker-instances.js'
import {
  DOCKER_LABEL_CPUS,
  DOCKER_LABEL_MEMORY,
  fromDockerLabels,
  LABEL_GENERATION,
  SUSPENDED_SUFFIX,
  toDockerLabelKey,
} from './docker-labels.js'
import { LaunchProgress } from './docker-progress.js'
import type { DockerProviderSettings, DockerTemplateSettings } from './docker-provider-config.js'

const NAME = 'docker'
/** How long a create that met a name conflict waits for the other creator's container to appear. */
const ADOPT_WAIT_MS = 10_000
/** Start failures of the runtime that a retry cannot fix (bad mounts, missing device drivers, bad executables). */
const STARTS_REFUSED =
  /OCI runtime create failed|error mounting|could not select device driver|executable file not found|no such file or directory/i

/**
 * The create path of the docker provider (the caller holds the instance's lock): find the
 * instance's container on any host (adopt it) or place a new one, wait for a start slot, make
 * sure of the image, network and home volume, create and start. Launch progress (a wait for a
 * slot, an image pull) is posted to the instance's progress URL.
 */
export class DockerCreator {
  readonly #hosts: DockerHosts
  readonly #settings: DockerProviderSettings
  readonly #containerName: (instanceId: string) => string
  readonly #now: () => number

  constructor(
    hosts: DockerHosts,
    settings: DockerProviderSettings,
    o: { containerName: (instanceId: string) => string; now: () => number },
  ) {
    this.#hosts = hosts
    this.#settings = settings
    this.#containerName = o.containerName
    this.#now = o.now
  }

  get #slow(): number {
    return this.#settings.startTimeoutMs
  }

  async create(
    spec: InstanceSpec,
    settings: DockerTemplateSettings,
    opts: OperationOptions,
  ): Promise<ProviderInstance> {
    opts.signal?.throwIfAborted()
    const survey = await this.#survey(spec, settings, opts)
    if (!Array.isArray(survey)) return survey
    const h = this.#hosts.place(survey, spec.template.name, settings)
    h.inflight++
    h.inflightCpus += settings.nanoCpus ?? 0
    h.inflightMemory += settings.memoryBytes ?? 0
    const progress = new LaunchProgress(spec, opts.log)
    try {
      const release = await this.#startSlot(h, progress, opts)
      try {
        return await this.#createOn(h, spec, settings, { ...opts, progress })
      } finally {
        release()
      }
    } finally {
      h.inflight--
      h.inflightCpus -= settings.nanoCpus ?? 0
      h.inflightMemory -= settings.memoryBytes ?? 0
      await progress.flush()
    }
  }

  /** A slot in the host's start limit; while waiting, the user sees how many starts are ahead. */
  async #startSlot(h: HostState, progress: LaunchProgress, opts: OperationOptions): Promise<() => void> {
    if (!h.starts) return () => {}
    if (h.starts.waiting > 0 || h.starts.active >= (h.host.maxConcurrentStarts ?? Infinity)) {
      progress.report(5, `waiting for a start slot on Docker host ${h.host.name} (${h.starts.waiting + 1} in line)`)
    }
    return h.starts.acquire(opts.signal)
  }

  /**
   * One list per answering host: returns the instance's live container when it has one (adopted),
   * else the candidate hosts with what this pool's other containers use there. Dead or superseded
   * containers of the instance are removed on the way.
   */
  async #survey(
    spec: InstanceSpec,
    settings: DockerTemplateSettings,
    opts: OperationOptions,
  ): Promise<Candidate[] | ProviderInstance> {
    const candidates: Candidate[] = []
    for (const h of this.#hosts.all) {
      if (!this.#hosts.usable(h)) continue
      let found: ContainerSummary[]
      try {
        found = await this.#hosts.onHost(h, (c) =>
          c.containerList([`${toDockerLabelKey(LABEL_POOL)}=${spec.poolId}`], { signal: opts.signal }),
        )
      } catch (err) {
        if (isUnavailable(err)) continue
        throw err
      }
      const use = { count: 0, usedCpus: 0, usedMemory: 0 }
      for (const c of found) {
        if (fromDockerLabels(c.Labels)[LABEL_INSTANCE] !== spec.id) {
          if (isLiveState(c.State)) {
            use.count++
            use.usedCpus += Number(c.Labels?.[DOCKER_LABEL_CPUS] ?? 0) || 0
            use.usedMemory += Number(c.Labels?.[DOCKER_LABEL_MEMORY] ?? 0) || 0
          }
          continue
        }
        const own = await this.#ownContainer(h, c, spec, opts)
        if (own) return own
      }
      if (matchesSelector(h.host, settings.hostSelector)) {
        const capacity =
          settings.nanoCpus || settings.memoryBytes ? await this.#hosts.capacity(h, opts).catch(() => null) : null
        candidates.push({ h, ...use, capacity })
      }
    }
    return candidates
  }

  /** An existing container of the instance: adopted (live, suspended, or created and never started) or removed. */
  async #ownContainer(
    h: HostState,
    c: ContainerSummary,
    spec: InstanceSpec,
    opts: OperationOptions,
  ): Promise<ProviderInstance | null> {
    const generation = spec.labels[LABEL_GENERATION]
    const sameGeneration = generation === undefined || fromDockerLabels(c.Labels)[LABEL_GENERATION] === generation
    const suspended = c.State === 'exited' && c.Names.some((n) => n.endsWith(SUSPENDED_SUFFIX))
    if (sameGeneration && c.State === 'created') {
      // Made but never started: its creator died between the two calls (a server killed mid-create).
      opts.log.info(
        { instanceId: spec.id, host: h.host.name, container: c.Id.slice(0, 12) },
        'docker: starting a container another process created and did not start',
      )
      return this.#startCreated(h, c.Id, spec, opts, false)
    }
    if (sameGeneration && (isLiveState(c.State) || suspended)) return summaryToInstance(h, c, null)
    // An exited container of this instance, or one of an older generation: replaced.
    opts.log.info(
      { instanceId: spec.id, host: h.host.name, container: c.Id.slice(0, 12), state: c.State },
      'docker: removing an earlier container of this instance',
    )
    await this.#hosts.onHost(h, (cl) => cl.containerRemove(c.Id, { signal: opts.signal, timeoutMs: this.#slow }))
    return null
  }

  async #createOn(
    h: HostState,
    spec: InstanceSpec,
    s: DockerTemplateSettings,
    opts: OperationOptions & { progress: LaunchProgress },
  ): Promise<ProviderInstance> {
    const signal = opts.signal
    await ensureImage(this.#hosts, h, spec, s, { ...opts, pullTimeoutMs: this.#settings.pullTimeoutMs })
    const network = await this.#hosts.ensureNetwork(h, s.network, opts)
    const home = await ensureHomeVolume(this.#hosts, h, spec, s, containerTokens(spec, s), {
      ...opts,
      timeoutMs: this.#slow,
    })
    const body = containerBody(spec, s, h.host, network, home)
    const name = this.#containerName(spec.id)
    let id: string
    try {
      id = await this.#hosts.onHost(h, (c) => c.containerCreate(name, body, { signal, timeoutMs: this.#slow }))
    } catch (err) {
      if (!(err instanceof DockerApiError && err.status === 409)) throw err
      id = await this.#adopt(h, name, spec, opts, err)
    }
    const inst = await this.#startCreated(h, id, spec, opts)
    opts.log.info({ instanceId: spec.id, host: h.host.name, container: id.slice(0, 12) }, 'docker: container started')
    return inst
  }

  /**
   * Another server process created the container a moment ago (the name is the lock): its id. The
   * daemon reserves the name before the container exists, so a concurrent inspect may briefly miss it.
   */
  async #adopt(
    h: HostState,
    name: string,
    spec: InstanceSpec,
    opts: OperationOptions,
    conflict: Error,
  ): Promise<string> {
    let other: ContainerInspect | undefined
    const deadline = this.#now() + ADOPT_WAIT_MS
    for (;;) {
      other = await this.#hosts.onHost(h, (c) => c.containerInspect(name, { signal: opts.signal }))
      if (other || this.#now() > deadline) break
      await sleep(50, undefined, { signal: opts.signal })
    }
    if (!other || fromDockerLabels(other.Config.Labels)[LABEL_INSTANCE] !== spec.id) throw conflict
    opts.log.info({ instanceId: spec.id, host: h.host.name }, 'docker: adopting the container another process created')
    return other.Id
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
      await this.#hosts.onHost(h, (c) => c.containerStart(id, { signal, timeoutMs: this.#slow }))
    } catch (err) {
      await this.#hosts.onHost(h, (c) => c.containerRemove(id, { timeoutMs: this.#slow })).catch(() => {})
      if (!(err instanceof DockerApiError)) throw err
      // The daemon answers 500 when the runtime refuses the container (a mount source that is not
      // there, a device driver the host lacks): that will not go away by retrying, so the session
      // fails with the daemon's reason instead of retrying for ever.
      const refused = STARTS_REFUSED.test(err.message)
      throw new ProviderError(NAME, `cannot start the container of ${spec.id} on ${h.host.name}: ${err.message}`, {
        cause: err,
        retryable: err.retryable && !refused,
        ...(refused ? { kind: 'config' as const } : {}),
      })
    } finally {
      release()
    }
    const inspected = await this.#hosts.onHost(h, (c) => c.containerInspect(id, { signal }))
    if (!inspected)
      throw new ProviderError(NAME, `the container of ${spec.id} vanished right after it started on ${h.host.name}`, {
        retryable: true,
      })
    return inspectToInstance(h, inspected)
  }

  /** The pool's containers on one host, or (host down) what it last had, as lost. */
}
