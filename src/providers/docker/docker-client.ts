import { Agent, errors as undiciErrors, request } from 'undici'
import { ProviderError } from '../../domain/errors.js'

/**
 * The subset of the Docker Engine API that studiopool calls (architecture.md conventions `<name>-client.ts`).
 *
 * Decision: undici on the socket rather than `dockerode`. It adds no dependency (undici is already
 * the gateway's HTTP client), and every call gets exactly the timeouts we choose: `dockerode`
 * (through `docker-modem`) has one global timeout and none by default, so a daemon that accepts the
 * connection and never answers would hang a worker cycle. Each method is one API call, without
 * retries; the provider decides what to retry.
 *
 * The API version is pinned (`/v1.41`, Docker 20.10): a newer daemon serves it unchanged, and
 * requests never change meaning under us when a host is upgraded.
 */
export const API_VERSION = 'v1.41'
const PROVIDER = 'docker'

export interface DockerClientOptions {
  /** `unix:///run/docker.sock` or `tcp://host:2375`. */
  readonly url: string
  /** Default timeout of one call (connect, headers and body), ms. */
  readonly timeoutMs: number
  /** TLS to a `tcp://` daemon (PEM contents, not paths). */
  readonly tls?: {
    readonly ca: string | null
    readonly cert: string | null
    readonly key: string | null
    readonly verify: boolean
    readonly serverName: string | null
  } | null
}

/** A failed Engine API call. `status` is the HTTP status (0 when the daemon was not reached). */
export class DockerApiError extends ProviderError {
  readonly status: number
  constructor(message: string, status: number, opts: { retryable: boolean; cause?: unknown; unavailable?: boolean }) {
    super(PROVIDER, message, {
      retryable: opts.retryable,
      cause: opts.cause,
      code: opts.unavailable ? 'PROVIDER_UNAVAILABLE' : 'PROVIDER_ERROR',
    })
    this.status = status
  }
}

export interface CallOptions {
  readonly signal?: AbortSignal
  /** Overrides the client's timeout for this call, ms. */
  readonly timeoutMs?: number
}

/** What `GET /containers/json` returns per container (the fields we read). */
export interface ContainerSummary {
  readonly Id: string
  readonly Names: readonly string[]
  readonly Image: string
  readonly Created: number
  readonly State: string
  readonly Status: string
  readonly Labels: Readonly<Record<string, string>> | null
  readonly Ports?: readonly { IP?: string; PrivatePort: number; PublicPort?: number; Type: string }[]
}

/** What `GET /containers/{id}/json` returns (the fields we read). */
export interface ContainerInspect {
  readonly Id: string
  readonly Name: string
  readonly Created: string
  readonly State: {
    readonly Status: string
    readonly Running: boolean
    readonly OOMKilled: boolean
    readonly Dead: boolean
    readonly ExitCode: number
    readonly Error: string
    readonly StartedAt: string
    readonly FinishedAt: string
  }
  readonly Config: {
    readonly Labels: Readonly<Record<string, string>> | null
    readonly Image: string
    readonly StopTimeout?: number
  }
  readonly NetworkSettings: {
    readonly Ports: Readonly<Record<string, readonly { HostIp: string; HostPort: string }[] | null>> | null
    readonly Networks?: Readonly<Record<string, { readonly IPAddress: string }>>
  }
  readonly HostConfig: { readonly Memory?: number }
}

export interface NetworkInspect {
  readonly Id: string
  readonly Name: string
  readonly Labels: Readonly<Record<string, string>> | null
  readonly Options: Readonly<Record<string, string>> | null
  readonly IPAM: { readonly Config: readonly { Subnet?: string; Gateway?: string }[] | null }
}

export interface VolumeInfo {
  readonly Name: string
  readonly Labels: Readonly<Record<string, string>> | null
  readonly Mountpoint: string
  readonly CreatedAt?: string
}

/** One line of the pull progress stream (`POST /images/create`). */
export interface PullEvent {
  readonly status?: string
  readonly id?: string
  readonly error?: string
  readonly progressDetail?: { current?: number; total?: number }
}

export class DockerClient {
  readonly url: string
  readonly #origin: string
  readonly #agent: Agent
  readonly #timeoutMs: number

  constructor(opts: DockerClientOptions) {
    this.url = opts.url
    this.#timeoutMs = opts.timeoutMs
    const u = parseDockerUrl(opts.url)
    if (u.kind === 'unix') {
      // The Host header is meaningless on a socket; the daemon ignores it.
      this.#origin = 'http://docker'
      this.#agent = new Agent({ connect: { socketPath: u.path, timeout: opts.timeoutMs }, keepAliveTimeout: 10_000 })
    } else if (opts.tls) {
      // dockerd --tlsverify: the daemon checks our client certificate, we check its certificate.
      const t = opts.tls
      this.#origin = `https://${u.host}:${u.port}`
      this.#agent = new Agent({
        connect: {
          timeout: opts.timeoutMs,
          ...(t.ca ? { ca: t.ca } : {}),
          ...(t.cert ? { cert: t.cert } : {}),
          ...(t.key ? { key: t.key } : {}),
          rejectUnauthorized: t.verify,
          ...(t.serverName ? { servername: t.serverName } : {}),
        },
        keepAliveTimeout: 10_000,
      })
    } else {
      this.#origin = `http://${u.host}:${u.port}`
      this.#agent = new Agent({ connect: { timeout: opts.timeoutMs }, keepAliveTimeout: 10_000 })
    }
  }

  /** `GET /_ping`: resolves when the daemon answers. */
  async ping(opts: CallOptions = {}): Promise<void> {
    await this.#call('GET', '/_ping', { ...opts, raw: true })
  }

  async version(opts: CallOptions = {}): Promise<{ Version: string; ApiVersion: string; Os: string; Arch: string }> {
    return this.#call('GET', '/version', opts)
  }

  /** `GET /info`: the fields we read (CPUs, memory, iptables, rootless). */
  async info(opts: CallOptions = {}): Promise<{
    NCPU: number
    MemTotal: number
    Name: string
    SecurityOptions?: readonly string[]
    BridgeNfIptables?: boolean
  }> {
    return this.#call('GET', '/info', opts)
  }

  /** Undefined when the daemon has no such image. */
  async imageInspect(
    name: string,
    opts: CallOptions = {},
  ): Promise<{ Id: string; Config?: { User?: string } } | undefined> {
    return this.#call('GET', `/images/${encodeURIComponent(name)}/json`, { ...opts, notFound: true })
  }

  /**
   * `POST /images/create?fromImage=…`: pulls, calling `onEvent` for every progress line. The daemon
   * answers 200 and reports failures inside the stream, so an `error` line is thrown here.
   */
  async imagePull(name: string, onEvent: (e: PullEvent) => void, opts: CallOptions = {}): Promise<void> {
    const { repo, tag } = splitImage(name)
    const body = await this.#call<AsyncIterable<Buffer>>(
      'POST',
      `/images/create?fromImage=${encodeURIComponent(repo)}&tag=${encodeURIComponent(tag)}`,
      { ...opts, stream: true },
    )
    let buf = ''
    for await (const chunk of body) {
      buf += chunk.toString('utf8')
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim()
        buf = buf.slice(nl + 1)
        if (!line) continue
        let ev: PullEvent
        try {
          ev = JSON.parse(line) as PullEvent
        } catch {
          continue
        }
        if (ev.error) throw new DockerApiError(`pulling ${name}: ${ev.error}`, 200, { retryable: false })
        onEvent(ev)
      }
    }
  }

  /** `POST /containers/create?name=…` → the new container's id. A 409 means the name is taken. */
  async containerCreate(name: string, body: unknown, opts: CallOptions = {}): Promise<string> {
    const res = await this.#call<{ Id: string }>('POST', `/containers/create?name=${encodeURIComponent(name)}`, {
      ...opts,
      body,
    })
    return res.Id
  }

  async containerStart(id: string, opts: CallOptions = {}): Promise<void> {
    // 304: already started.
    await this.#call('POST', `/containers/${encodeURIComponent(id)}/start`, { ...opts, raw: true, accept: [304] })
  }

  /** SIGTERM, then SIGKILL after `graceSeconds`. 304: already stopped; an absent container resolves. */
  async containerStop(id: string, graceSeconds: number, opts: CallOptions = {}): Promise<void> {
    await this.#call('POST', `/containers/${encodeURIComponent(id)}/stop?t=${graceSeconds}`, {
      ...opts,
      raw: true,
      notFound: true,
      accept: [304],
      // The daemon answers only once the container is down: allow the grace period on top.
      timeoutMs: (opts.timeoutMs ?? this.#timeoutMs) + graceSeconds * 1000,
    })
  }

  async containerRename(id: string, name: string, opts: CallOptions = {}): Promise<void> {
    await this.#call('POST', `/containers/${encodeURIComponent(id)}/rename?name=${encodeURIComponent(name)}`, {
      ...opts,
      raw: true,
    })
  }

  /** Force-removes a container; never its named volumes (`v=false`). Resolves when it is absent. */
  async containerRemove(id: string, opts: CallOptions = {}): Promise<void> {
    await this.#call('DELETE', `/containers/${encodeURIComponent(id)}?force=true&v=false`, {
      ...opts,
      raw: true,
      notFound: true,
    })
  }

  /** Undefined when the daemon has no such container (id or name). */
  async containerInspect(idOrName: string, opts: CallOptions = {}): Promise<ContainerInspect | undefined> {
    return this.#call('GET', `/containers/${encodeURIComponent(idOrName)}/json`, { ...opts, notFound: true })
  }

  /** Every container (running or not) matching the label filters (`key=value` or `key`): one call. */
  async containerList(labels: readonly string[], opts: CallOptions = {}): Promise<ContainerSummary[]> {
    const filters = encodeURIComponent(JSON.stringify({ label: labels }))
    return this.#call('GET', `/containers/json?all=true&filters=${filters}`, opts)
  }

  async networkInspect(name: string, opts: CallOptions = {}): Promise<NetworkInspect | undefined> {
    return this.#call('GET', `/networks/${encodeURIComponent(name)}`, { ...opts, notFound: true })
  }

  async networkCreate(body: unknown, opts: CallOptions = {}): Promise<string> {
    const res = await this.#call<{ Id: string }>('POST', '/networks/create', { ...opts, body })
    return res.Id
  }

  async networkRemove(name: string, opts: CallOptions = {}): Promise<void> {
    await this.#call('DELETE', `/networks/${encodeURIComponent(name)}`, { ...opts, raw: true, notFound: true })
  }

  /** Idempotent in the daemon: creating an existing name returns it (its labels unchanged). */
  async volumeCreate(
    name: string,
    labels: Readonly<Record<string, string>>,
    opts: CallOptions = {},
  ): Promise<VolumeInfo> {
    return this.#call('POST', '/volumes/create', { ...opts, body: { Name: name, Labels: labels } })
  }

  async volumeInspect(name: string, opts: CallOptions = {}): Promise<VolumeInfo | undefined> {
    return this.#call('GET', `/volumes/${encodeURIComponent(name)}`, { ...opts, notFound: true })
  }

  async volumeList(labels: readonly string[], opts: CallOptions = {}): Promise<VolumeInfo[]> {
    const filters = encodeURIComponent(JSON.stringify({ label: labels }))
    const res = await this.#call<{ Volumes: VolumeInfo[] | null }>('GET', `/volumes?filters=${filters}`, opts)
    return res.Volumes ?? []
  }

  /** 409 while a container uses it. */
  async volumeRemove(name: string, opts: CallOptions = {}): Promise<void> {
    await this.#call('DELETE', `/volumes/${encodeURIComponent(name)}`, { ...opts, raw: true, notFound: true })
  }

  async close(): Promise<void> {
    await this.#agent.close()
  }

  async #call<T>(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    o: CallOptions & {
      body?: unknown
      raw?: boolean
      notFound?: boolean
      stream?: boolean
      accept?: readonly number[]
    },
  ): Promise<T> {
    const timeoutMs = o.timeoutMs ?? this.#timeoutMs
    const timeout = AbortSignal.timeout(timeoutMs)
    const signal = o.signal ? AbortSignal.any([o.signal, timeout]) : timeout
    const what = `${method} ${path.split('?')[0]} on ${this.url}`
    let res
    try {
      res = await request(`${this.#origin}/${API_VERSION}${path}`, {
        method,
        dispatcher: this.#agent,
        signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        headers: o.body === undefined ? {} : { 'content-type': 'application/json' },
        body: o.body === undefined ? undefined : JSON.stringify(o.body),
      })
    } catch (err) {
      throw transportError(err, what, timeoutMs, o.signal)
    }
    const { statusCode } = res
    if (statusCode === 404 && o.notFound) {
      await res.body.dump()
      return undefined as T
    }
    if (statusCode >= 400) {
      let message = ''
      try {
        const text = await res.body.text()
        try {
          message = String((JSON.parse(text) as { message?: unknown }).message ?? text)
        } catch {
          message = text
        }
      } catch {
        // the body is only for the message
      }
      throw new DockerApiError(`docker: ${what} answered ${statusCode}: ${message.trim().slice(0, 500)}`, statusCode, {
        retryable: statusCode >= 500 || statusCode === 429,
      })
    }
    if (o.stream) return res.body as unknown as T
    try {
      if (o.raw || statusCode === 204 || (o.accept ?? []).includes(statusCode)) {
        await res.body.dump()
        return undefined as T
      }
      return (await res.body.json()) as T
    } catch (err) {
      throw transportError(err, what, timeoutMs, o.signal)
    }
  }
}

function transportError(err: unknown, what: string, timeoutMs: number, callerSignal: AbortSignal | undefined): Error {
  if (callerSignal?.aborted) return callerSignal.reason instanceof Error ? callerSignal.reason : new Error('aborted')
  const e = err as { name?: string; code?: string; message?: string }
  const timedOut =
    e.name === 'TimeoutError' ||
    e.name === 'AbortError' ||
    err instanceof undiciErrors.HeadersTimeoutError ||
    err instanceof undiciErrors.BodyTimeoutError ||
    err instanceof undiciErrors.ConnectTimeoutError
  const detail = timedOut
    ? `no answer within ${timeoutMs} ms`
    : `${e.code ?? e.name ?? 'error'}: ${e.message ?? String(err)}`
  return new DockerApiError(`docker: ${what}: ${detail}`, 0, { retryable: true, unavailable: true, cause: err })
}

export type DockerUrl = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number }

/** `unix:///abs/path` or `tcp://host:port`; throws with a message naming the value otherwise. */
export function parseDockerUrl(url: string): DockerUrl {
  if (url.startsWith('unix://')) {
    const path = url.slice('unix://'.length)
    if (!path.startsWith('/')) throw new Error(`"${url}" must be unix:///absolute/path`)
    return { kind: 'unix', path }
  }
  const m = /^tcp:\/\/(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})\/?$/.exec(url)
  if (m && Number(m[2]) > 0 && Number(m[2]) < 65536) return { kind: 'tcp', host: m[1]!, port: Number(m[2]) }
  throw new Error(`"${url}" is neither unix:///path nor tcp://host:port`)
}

/** `repo[:tag]` or `repo@digest` → what `fromImage` and `tag` take; no tag means `latest`. */
export function splitImage(name: string): { repo: string; tag: string } {
  const at = name.indexOf('@')
  if (at >= 0) return { repo: name.slice(0, at), tag: name.slice(at + 1) }
  const slash = name.lastIndexOf('/')
  const colon = name.lastIndexOf(':')
  if (colon > slash) return { repo: name.slice(0, colon), tag: name.slice(colon + 1) }
  return { repo: name, tag: 'latest' }
}
