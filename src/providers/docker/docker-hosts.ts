import type { Logger } from 'pino'
import { ProviderError } from '../../domain/errors.js'
import { LABEL_POOL, type OperationOptions } from '../provider.js'
import { DockerApiError, DockerClient } from './docker-client.js'
import { toDockerLabelKey } from './docker-labels.js'
import { DOCKER_DEFAULTS, type DockerHost, type DockerProviderSettings } from './docker-provider-config.js'
import { Semaphore } from './docker-semaphore.js'
import type { DockerTemplateSettings } from './docker-provider-config.js'
import type { ProviderInstance } from '../provider.js'

const NAME = 'docker'
/** `<host name>/<64 hex container id>`. */
const REF_RE = /^([a-z0-9][a-z0-9-]{0,62})\/([0-9a-f]{64})$/

/** One Docker Engine host and what the provider knows about it. */
export interface HostState {
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

/** A host that could take a new container, with what its live containers of this pool use. */
export interface Candidate {
  readonly h: HostState
  readonly count: number
  readonly usedCpus: number
  readonly usedMemory: number
  readonly capacity: { nanoCpus: number; memoryBytes: number } | null
}

export interface HostStatus {
  name: string
  up: boolean
  reason: string | null
  live: number
  starting: number
  waiting: number
}

/**
 * The Docker hosts of one provider: a client each, whether it answers (marked down on a transport
 * failure and probed again with backoff), its start limit, capacity and managed network, and
 * placement among them.
 */
export class DockerHosts {
  readonly all: readonly HostState[]
  readonly #byName = new Map<string, HostState>()
  readonly #settings: DockerProviderSettings
  readonly #poolId: string
  readonly #log: Logger
  readonly #now: () => number
  /** The managed network's name on every host. */
  readonly networkName: string

  constructor(
    settings: DockerProviderSettings,
    o: { poolId: string; poolTag: string; log: Logger; now: () => number },
  ) {
    this.#settings = settings
    this.#poolId = o.poolId
    this.#log = o.log
    this.#now = o.now
    this.networkName = `studiopool-${o.poolTag}`
    this.all = settings.hosts.map((host) => ({
      host,
      client: new DockerClient({ url: host.url, timeoutMs: settings.requestTimeoutMs, tls: host.tls }),
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
      backoffMs: settings.downBackoffMs,
      downReason: '',
      lastSeen: new Map(),
      network: null,
      subnets: [],
    }))
    for (const h of this.all) this.#byName.set(h.host.name, h)
  }

  get(name: string): HostState | undefined {
    return this.#byName.get(name)
  }

  /** The host and container id of a ref, or null when the ref is not ours. */
  resolve(ref: string): { h: HostState; id: string } | null {
    const m = REF_RE.exec(ref)
    const h = m ? this.#byName.get(m[1]!) : undefined
    return h ? { h, id: m![2]! } : null
  }

  /** Answering, or due for a probe. */
  usable(h: HostState): boolean {
    return h.downSince === null || this.#now() >= h.retryAt
  }

  status(): HostStatus[] {
    return this.all.map((h) => ({
      name: h.host.name,
      up: h.downSince === null,
      reason: h.downSince === null ? null : h.downReason,
      live: h.live,
      starting: h.starts ? h.starts.active : h.inflight,
      waiting: h.starts ? h.starts.waiting : 0,
    }))
  }

  subnets(): string[] {
    return [...new Set(this.all.flatMap((h) => h.subnets))]
  }

  /** Runs one call on a host, marking it down when the daemon is not reached and up when it answers. */
  async onHost<T>(h: HostState, fn: (c: DockerClient) => Promise<T>): Promise<T> {
    try {
      const v = await fn(h.client)
      if (h.downSince !== null) {
        this.#log.info({ host: h.host.name, downForMs: this.#now() - h.downSince }, 'docker: host answers again')
        h.downSince = null
        h.backoffMs = this.#settings.downBackoffMs
      }
      return v
    } catch (err) {
      if (err instanceof DockerApiError && err.status === 0) this.#markDown(h, err)
      throw err
    }
  }

  #markDown(h: HostState, err: DockerApiError): void {
    const now = this.#now()
    if (h.downSince === null) {
      h.downSince = now
      h.backoffMs = this.#settings.downBackoffMs
      this.#log.warn(
        { host: h.host.name, err: err.message },
        'docker: host does not answer; its sessions are lost until it is back',
      )
    } else {
      h.backoffMs = Math.min(h.backoffMs * 2, DOCKER_DEFAULTS.maxDownBackoffMs)
    }
    h.retryAt = now + h.backoffMs
    h.downReason = err.message.replace(/^docker: /, '')
  }

  /** What the host offers to sessions: its settings, else what the daemon reports (asked once). */
  async capacity(h: HostState, opts: OperationOptions): Promise<{ nanoCpus: number; memoryBytes: number }> {
    if (!h.capacity) {
      const info = await this.onHost(h, (c) => c.info({ signal: opts.signal }))
      h.capacity = { nanoCpus: h.host.nanoCpus ?? info.NCPU * 1e9, memoryBytes: h.host.memoryBytes ?? info.MemTotal }
    }
    return h.capacity
  }

  /** The network sessions join: the template's own, or the managed one (created on first use). */
  async ensureNetwork(h: HostState, named: string | null, opts: OperationOptions): Promise<string> {
    if (named) return named
    if (!h.network) {
      h.network = this.#makeNetwork(h, opts)
      h.network.catch(() => {
        h.network = null
      })
    }
    return (await h.network).name
  }

  async #makeNetwork(h: HostState, opts: OperationOptions): Promise<{ name: string; subnets: string[] }> {
    const name = this.networkName
    const slow = this.#settings.startTimeoutMs
    let net = await this.onHost(h, (c) => c.networkInspect(name, { signal: opts.signal }))
    if (!net) {
      try {
        await this.onHost(h, (c) =>
          c.networkCreate(
            {
              Name: name,
              CheckDuplicate: true,
              Driver: 'bridge',
              // Inter-container traffic off: sessions on this network cannot open connections to each other.
              Options: { 'com.docker.network.bridge.enable_icc': 'false' },
              Labels: { [toDockerLabelKey(LABEL_POOL)]: this.#poolId },
            },
            { signal: opts.signal, timeoutMs: slow },
          ),
        )
      } catch (err) {
        if (!(err instanceof DockerApiError && err.status === 409)) throw err
      }
      net = await this.onHost(h, (c) => c.networkInspect(name, { signal: opts.signal }))
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
  }

  /**
   * The host with the most free slots among the candidates where the template's CPUs and memory
   * fit; throws a retryable PROVIDER_UNAVAILABLE when none can take one more.
   */
  place(candidates: readonly Candidate[], templateName: string, s: DockerTemplateSettings): HostState {
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
      const down = this.all.filter((h) => h.downSince !== null).map((h) => h.host.name)
      throw new ProviderError(
        NAME,
        `no Docker host can take a container of template "${templateName}"` +
          (down.length ? ` (not answering: ${down.join(', ')})` : ' (all full: instances, CPUs or memory)'),
        { retryable: true, code: 'PROVIDER_UNAVAILABLE' },
      )
    }
    return best.h
  }

  async close(): Promise<void> {
    await Promise.all(this.all.map((h) => h.client.close()))
  }
}

export function matchesSelector(host: DockerHost, selector: Readonly<Record<string, string>>): boolean {
  return Object.entries(selector).every(([k, v]) => host.labels[k] === v)
}

export function isUnavailable(err: unknown): boolean {
  return err instanceof DockerApiError && err.status === 0
}
