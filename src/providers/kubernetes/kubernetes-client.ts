/**
 * The subset of the Kubernetes API the provider calls (architecture.md conventions: `<name>-client.ts`
 * is the subset, as an interface), over the official client `@kubernetes/client-node`: the only
 * module of studiopool that imports it, with kubernetes-reflector.ts (which uses its Watch).
 */
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  NetworkingV1Api,
  Observable,
  PatchStrategy,
  Watch,
  type KubernetesObject,
  type CoreV1Event as V1Event,
  type V1NetworkPolicy,
  type V1PersistentVolumeClaim,
  type V1Pod,
} from '@kubernetes/client-node'
import type { KubernetesProviderSettings } from './kubernetes-provider-config.js'

export type { V1Event, V1NetworkPolicy, V1PersistentVolumeClaim, V1Pod, KubernetesObject }

/** An API call that failed: `status` 0 when the API server did not answer (network, timeout). */
export class KubeApiError extends Error {
  readonly status: number
  /** The Status body's `reason` (`AlreadyExists`, `Invalid`, `NotFound`, `Conflict`, `Expired`…). */
  readonly reason: string
  constructor(status: number, reason: string, message: string, opts?: { cause?: unknown }) {
    super(message, opts)
    this.status = status
    this.reason = reason
  }

  get unreachable(): boolean {
    return this.status === 0 || this.status === 502 || this.status === 503 || this.status === 504
  }
}

export interface ListResult<T> {
  readonly items: T[]
  readonly resourceVersion: string
}

export type WatchHandler = (type: string, obj: KubernetesObject & { code?: number }) => void

export interface KubeClient {
  readonly namespace: string
  listPods(labelSelector: string, signal?: AbortSignal): Promise<ListResult<V1Pod>>
  listEvents(fieldSelector: string, signal?: AbortSignal): Promise<ListResult<V1Event>>
  /** Watches `resource` of the namespace until it ends; resolves with the error that ended it, or null. */
  watch(
    resource: 'pods' | 'events',
    query: Record<string, string>,
    onEvent: WatchHandler,
    signal: AbortSignal,
  ): Promise<unknown>
  createPod(body: V1Pod, signal?: AbortSignal): Promise<V1Pod>
  getPod(name: string, signal?: AbortSignal): Promise<V1Pod | null>
  /** Deletes the pod with this uid (a newer pod of the same name is left alone); false when absent. */
  deletePod(name: string, uid: string | null, graceSeconds: number | null, signal?: AbortSignal): Promise<boolean>
  /** A JSON merge patch of the pod's metadata. */
  patchPodMetadata(name: string, metadata: Record<string, unknown>, signal?: AbortSignal): Promise<V1Pod>
  getClaim(name: string, signal?: AbortSignal): Promise<V1PersistentVolumeClaim | null>
  createClaim(body: V1PersistentVolumeClaim, signal?: AbortSignal): Promise<V1PersistentVolumeClaim>
  listClaims(labelSelector: string, signal?: AbortSignal): Promise<V1PersistentVolumeClaim[]>
  deleteClaim(name: string, signal?: AbortSignal): Promise<boolean>
  getNetworkPolicy(name: string, signal?: AbortSignal): Promise<V1NetworkPolicy | null>
  createNetworkPolicy(body: V1NetworkPolicy, signal?: AbortSignal): Promise<V1NetworkPolicy>
  /** Replaces the policy (a PUT with the resourceVersion read, so a concurrent change is a 409, not lost). */
  replaceNetworkPolicy(body: V1NetworkPolicy, signal?: AbortSignal): Promise<V1NetworkPolicy>
}

function statusOf(body: unknown): { reason: string; message: string } {
  let b: unknown = body
  if (typeof body === 'string') {
    try {
      b = JSON.parse(body)
    } catch {
      return { reason: '', message: body.slice(0, 500) }
    }
  }
  const s = (b ?? {}) as { reason?: unknown; message?: unknown }
  return {
    reason: typeof s.reason === 'string' ? s.reason : '',
    message: typeof s.message === 'string' ? s.message : '',
  }
}

/** Any error of the official client as a KubeApiError, with the Status body's reason and message. */
export function toKubeError(err: unknown, what: string): KubeApiError {
  if (err instanceof KubeApiError) return err
  if (err instanceof ApiException) {
    const { reason, message } = statusOf(err.body)
    return new KubeApiError(err.code, reason, `${what}: ${message || `HTTP ${err.code}`}`, { cause: err })
  }
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } }
  const why = e.name === 'TimeoutError' ? 'timed out' : (e.cause?.code ?? e.cause?.message ?? e.message ?? String(err))
  return new KubeApiError(0, 'Unreachable', `${what}: the API server does not answer (${why})`, { cause: err })
}

/** The kubeconfig the settings name: the pod's service account, or a file and context. */
export function loadKubeConfig(s: KubernetesProviderSettings): KubeConfig {
  const kc = new KubeConfig()
  if (s.auth === 'in-cluster') kc.loadFromCluster()
  else {
    kc.loadFromFile(s.kubeconfig!)
    if (s.context) kc.setCurrentContext(s.context)
  }
  if (!kc.getCurrentCluster()) throw new Error('the kubeconfig names no cluster for its current context')
  return kc
}

/**
 * A call's options: its timeout, the caller's signal, a content type (patches). The object API
 * takes the client's Observable middleware.
 */
function callOptions(timeoutMs: number, signal: AbortSignal | undefined, contentType?: string): any {
  const abort = signal ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs)
  return {
    middleware: [
      {
        pre: (ctx: { setSignal(s: AbortSignal): void; setHeaderParam(k: string, v: string): void }) => {
          ctx.setSignal(abort)
          if (contentType) ctx.setHeaderParam('Content-Type', contentType)
          return new Observable(Promise.resolve(ctx))
        },
        post: (res: unknown) => new Observable(Promise.resolve(res)),
      },
    ],
    middlewareMergeStrategy: 'append',
  }
}

export function createKubeClient(kc: KubeConfig, s: KubernetesProviderSettings): KubeClient {
  return new OfficialKubeClient(kc, s)
}

async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    throw toKubeError(err, what)
  }
}

async function orNull<T>(what: string, fn: () => Promise<T>): Promise<T | null> {
  try {
    return await call(what, fn)
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) return null
    throw err
  }
}

/** KubeClient over the official client's CoreV1Api, NetworkingV1Api and Watch. */
class OfficialKubeClient implements KubeClient {
  readonly namespace: string
  readonly #core: CoreV1Api
  readonly #net: NetworkingV1Api
  readonly #watch: Watch
  readonly #t: number

  constructor(kc: KubeConfig, s: KubernetesProviderSettings) {
    this.namespace = s.namespace
    this.#core = kc.makeApiClient(CoreV1Api)
    this.#net = kc.makeApiClient(NetworkingV1Api)
    this.#t = s.requestTimeoutMs
    this.#watch = new Watch(kc)
    // The client's inactivity timeout: the server sends a bookmark or closes the watch before it.
    ;(this.#watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = s.watchTimeoutMs + 30_000
  }

  #o(signal?: AbortSignal, contentType?: string): any {
    return callOptions(this.#t, signal, contentType)
  }

  listPods(labelSelector: string, signal?: AbortSignal): Promise<ListResult<V1Pod>> {
    return call('list pods', async () => {
      const l = await this.#core.listNamespacedPod({ namespace: this.namespace, labelSelector }, this.#o(signal))
      return { items: l.items, resourceVersion: l.metadata?.resourceVersion ?? '' }
    })
  }

  listEvents(fieldSelector: string, signal?: AbortSignal): Promise<ListResult<V1Event>> {
    return call('list events', async () => {
      const l = await this.#core.listNamespacedEvent({ namespace: this.namespace, fieldSelector }, this.#o(signal))
      return { items: l.items, resourceVersion: l.metadata?.resourceVersion ?? '' }
    })
  }

  watch(
    resource: 'pods' | 'events',
    query: Record<string, string>,
    onEvent: WatchHandler,
    signal: AbortSignal,
  ): Promise<unknown> {
    return new Promise<unknown>((resolve) => {
      let controller: AbortController | undefined
      const onAbort = () => controller?.abort()
      signal.addEventListener('abort', onAbort, { once: true })
      this.#watch
        .watch(
          `/api/v1/namespaces/${this.namespace}/${resource}`,
          query,
          (type, obj) => onEvent(type, obj as KubernetesObject),
          (err) => {
            signal.removeEventListener('abort', onAbort)
            resolve(err ?? null)
          },
        )
        .then(
          (c) => {
            controller = c
            if (signal.aborted) c.abort()
          },
          (err: unknown) => resolve(err),
        )
    })
  }

  createPod(body: V1Pod, signal?: AbortSignal): Promise<V1Pod> {
    return call('create pod', () =>
      this.#core.createNamespacedPod({ namespace: this.namespace, body }, this.#o(signal)),
    )
  }

  getPod(name: string, signal?: AbortSignal): Promise<V1Pod | null> {
    return orNull('get pod', () => this.#core.readNamespacedPod({ name, namespace: this.namespace }, this.#o(signal)))
  }

  async deletePod(
    name: string,
    uid: string | null,
    graceSeconds: number | null,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const body = {
      ...(uid ? { preconditions: { uid } } : {}),
      ...(graceSeconds !== null ? { gracePeriodSeconds: graceSeconds } : {}),
    }
    try {
      await call('delete pod', () =>
        this.#core.deleteNamespacedPod({ name, namespace: this.namespace, body }, this.#o(signal)),
      )
      return true
    } catch (err) {
      // 404: gone already; 409 on the uid precondition: a newer pod of the same name, not ours to delete.
      if (err instanceof KubeApiError && (err.status === 404 || err.status === 409)) return false
      throw err
    }
  }

  patchPodMetadata(name: string, metadata: Record<string, unknown>, signal?: AbortSignal): Promise<V1Pod> {
    return call('patch pod', () =>
      this.#core.patchNamespacedPod(
        { name, namespace: this.namespace, body: { metadata } },
        this.#o(signal, PatchStrategy.MergePatch),
      ),
    )
  }

  getClaim(name: string, signal?: AbortSignal): Promise<V1PersistentVolumeClaim | null> {
    return orNull('get claim', () =>
      this.#core.readNamespacedPersistentVolumeClaim({ name, namespace: this.namespace }, this.#o(signal)),
    )
  }

  createClaim(body: V1PersistentVolumeClaim, signal?: AbortSignal): Promise<V1PersistentVolumeClaim> {
    return call('create claim', () =>
      this.#core.createNamespacedPersistentVolumeClaim({ namespace: this.namespace, body }, this.#o(signal)),
    )
  }

  listClaims(labelSelector: string, signal?: AbortSignal): Promise<V1PersistentVolumeClaim[]> {
    return call('list claims', async () => {
      const l = await this.#core.listNamespacedPersistentVolumeClaim(
        { namespace: this.namespace, labelSelector },
        this.#o(signal),
      )
      return l.items
    })
  }

  async deleteClaim(name: string, signal?: AbortSignal): Promise<boolean> {
    const r = await orNull('delete claim', () =>
      this.#core.deleteNamespacedPersistentVolumeClaim({ name, namespace: this.namespace }, this.#o(signal)),
    )
    return r !== null
  }

  getNetworkPolicy(name: string, signal?: AbortSignal): Promise<V1NetworkPolicy | null> {
    return orNull('get network policy', () =>
      this.#net.readNamespacedNetworkPolicy({ name, namespace: this.namespace }, this.#o(signal)),
    )
  }

  createNetworkPolicy(body: V1NetworkPolicy, signal?: AbortSignal): Promise<V1NetworkPolicy> {
    return call('create network policy', () =>
      this.#net.createNamespacedNetworkPolicy({ namespace: this.namespace, body }, this.#o(signal)),
    )
  }

  replaceNetworkPolicy(body: V1NetworkPolicy, signal?: AbortSignal): Promise<V1NetworkPolicy> {
    return call('replace network policy', () =>
      this.#net.replaceNamespacedNetworkPolicy(
        { name: body.metadata!.name!, namespace: this.namespace, body },
        this.#o(signal),
      ),
    )
  }
}
