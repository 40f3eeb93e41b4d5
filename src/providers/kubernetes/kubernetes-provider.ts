import { setTimeout as sleep } from 'node:timers/promises'
import type { TemplateConfig } from '../../config/types.js'
import { ProviderError, ValidationError } from '../../domain/errors.js'
import { isInstanceId } from '../../domain/ids.js'
import { KeyedSerializer } from '../keyed-serializer.js'
import {
  LABEL_INSTANCE,
  type HomeList,
  type InstanceSpec,
  type IsolationReport,
  type OperationOptions,
  type Provider,
  type ProviderCapabilities,
  type ProviderContext,
  type ProviderInstance,
} from '../provider.js'
import {
  createKubeClient,
  KubeApiError,
  loadKubeConfig,
  toKubeError,
  type KubeClient,
  type V1Event,
  type V1Pod,
} from './kubernetes-client.js'
import { ensureHomeClaim, ensureNetworkPolicy, homeRecord, networkPolicyName } from './kubernetes-homes.js'
import {
  K8S_ANNOTATION_LABELS,
  K8S_LABEL_POOL,
  K8S_LABEL_ROLE,
  kubeLabels,
  labelValue,
  LABEL_GENERATION,
  studiopoolLabels,
} from './kubernetes-labels.js'
import { podManifest, podName } from './kubernetes-pod.js'
import {
  parseKubernetesProviderSettings,
  parseKubernetesTemplateSettings,
  type KubernetesProviderSettings,
} from './kubernetes-provider-config.js'
import { NAME, translateKubeError } from './kubernetes-errors.js'
import { Reflector } from './kubernetes-reflector.js'
import { parseRef, podInstance, podRef } from './kubernetes-status.js'

/** A pod of this pool deleted behind studiopool's back, remembered to report why its session was lost. */
interface Tombstone {
  readonly inst: ProviderInstance
  readonly at: number
}

/**
 * `kubernetes` provider (architecture.md contract 4, issue 15): a Pod per session in the pool's
 * namespace, a PersistentVolumeClaim per user, a NetworkPolicy that admits only the gateway.
 *
 * - Watched, not polled: one reflector over the pool's pods and one over pod events in the namespace
 *   (list, then watch from the resourceVersion with bookmarks, re-list on 410). `list()` and
 *   `describe()` answer from that cache: no API call per instance in steady state, and an API server
 *   that does not answer leaves the sessions as they were last seen (nothing is lost, nothing deleted).
 * - Refs are `<pod name>/<uid>`; pods are named `studiopool-<instanceId>-<generation>`.
 * - A pod evicted, OOM-killed, failed, whose node was lost, or deleted behind our back is reported
 *   `terminated` with the reason in words, so that the pool replaces it under the same instance id and URL.
 * - A pending pod's scheduler and kubelet events (FailedScheduling, TriggeredScaleUp, Pulling,
 *   ErrImagePull) are launch progress with their message, not failures; the template's start timeout decides.
 * - Reached by pod IP and port, not a Service per pod: a pod IP is stable for the pod's life, a
 *   replaced pod gets a new ref and address anyway, and a Service per session would double the
 *   objects and the kube-proxy rules for nothing the gateway needs.
 */
export class KubernetesProvider implements Provider {
  readonly name = NAME
  readonly capabilities: ProviderCapabilities = { supportsSuspend: false, reportsProgress: true }
  readonly settings: KubernetesProviderSettings
  readonly #ctx: ProviderContext
  readonly #now: () => number
  readonly #locks = new KeyedSerializer()
  #client: KubeClient | undefined
  #pods: Reflector<V1Pod> | undefined
  #events: Reflector<V1Event> | undefined
  /** The latest event of each pod, by pod name. */
  readonly #lastEvent = new Map<string, V1Event>()
  /** uids of the pods this process deleted: not lost, gone on purpose. */
  readonly #deleted = new Map<string, number>()
  readonly #tombstones = new Map<string, Tombstone>()
  /** uids of pods listed as ended (Failed, Succeeded, lost), with when that was first seen. */
  readonly #endedSince = new Map<string, number>()

  constructor(ctx: ProviderContext, deps: { client?: KubeClient; now?: () => number } = {}) {
    try {
      this.settings = parseKubernetesProviderSettings(ctx.settings)
    } catch (err) {
      throw new ValidationError('invalid providers.kubernetes settings', [
        { path: 'providers.kubernetes', message: (err as Error).message },
      ])
    }
    this.#ctx = ctx
    this.#client = deps.client
    this.#now = deps.now ?? Date.now
  }

  get namespace(): string {
    return this.settings.namespace
  }

  /** The reflectors' counters (lists, watches, 410s, bookmarks), for tests and the dashboard. */
  get watchStats(): {
    pods: Reflector<V1Pod>['stats'] | null
    apiLastContactAt: number | null
    apiError: string | null
  } {
    return {
      pods: this.#pods?.stats ?? null,
      apiLastContactAt: this.#pods?.lastContactAt ?? null,
      apiError: this.#pods?.lastError ?? null,
    }
  }

  get #selector(): string {
    return `${K8S_LABEL_POOL}=${labelValue(this.#ctx.poolId)},${K8S_LABEL_ROLE}=session`
  }

  async init(opts: OperationOptions): Promise<void> {
    try {
      await this.#init(opts)
    } catch (err) {
      await this.close() // no watch left running behind a failed start
      throw err
    }
  }

  async #init(opts: OperationOptions): Promise<void> {
    if (!this.#client) {
      try {
        this.#client = createKubeClient(loadKubeConfig(this.settings), this.settings)
      } catch (err) {
        throw new ProviderError(NAME, `cannot load the Kubernetes configuration: ${(err as Error).message}`, {
          code: 'PROVIDER_UNAVAILABLE',
          kind: 'config',
        })
      }
    }
    const client = this.#client
    const common = {
      watchTimeoutMs: this.settings.watchTimeoutMs,
      retryBackoffMs: this.settings.retryBackoffMs,
      maxRetryBackoffMs: Math.max(this.settings.maxRetryBackoffMs, this.settings.retryBackoffMs),
      log: this.#ctx.log,
    }
    this.#pods = new Reflector<V1Pod>({
      ...common,
      name: 'pods',
      list: (signal) => client.listPods(this.#selector, signal),
      query: { labelSelector: this.#selector },
      watch: (q, on, signal) => client.watch('pods', q, on, signal),
      onChange: (change, pod) => change === 'deleted' && this.#gone(pod),
    })
    this.#events = new Reflector<V1Event>({
      ...common,
      name: 'events',
      list: (signal) => client.listEvents('involvedObject.kind=Pod', signal),
      query: { fieldSelector: 'involvedObject.kind=Pod' },
      watch: (q, on, signal) => client.watch('events', q, on, signal),
      onChange: (change, e) => change !== 'deleted' && this.#noteEvent(e),
    })
    this.#pods.start()
    this.#events.start()
    if (!(await this.#pods.waitSynced(this.settings.requestTimeoutMs))) {
      throw new ProviderError(
        NAME,
        `the Kubernetes API does not answer a list of pods in namespace ${this.namespace}: ${this.#pods.lastError ?? 'timed out'}`,
        { retryable: true, code: 'PROVIDER_UNAVAILABLE' },
      )
    }
    if (this.settings.networkPolicy) {
      await ensureNetworkPolicy(client, this.#ctx.poolId, this.settings).catch((err: unknown) => {
        throw new ProviderError(
          NAME,
          `cannot make the NetworkPolicy ${networkPolicyName()}: ${toKubeError(err, 'network policy').message}`,
          {
            code: 'PROVIDER_UNAVAILABLE',
            kind: 'config',
          },
        )
      })
    }
    opts.log.info(
      { namespace: this.namespace, pods: this.#pods.values().length },
      'kubernetes: watching the pool’s pods',
    )
  }

  isolation(): IsolationReport {
    return {
      isolated: true,
      sessionsReachLoopback: false,
      sessionNetworks: [],
      notes: [
        'kubernetes: each session is a pod running as a non-root user, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault, and no service account token mounted',
        this.settings.networkPolicy
          ? `kubernetes: the NetworkPolicy ${networkPolicyName()} in namespace ${this.namespace} admits ingress to session pods only from the gateway's pods; it holds only where the cluster's network plugin enforces NetworkPolicy (Calico, Cilium, …)`
          : 'kubernetes: networkPolicy is false: nothing stops a session from reaching another session pod (isolation is yours to provide)',
      ],
    }
  }

  validateTemplate(template: TemplateConfig): string[] {
    const parsed = parseKubernetesTemplateSettings(template.settings, template.port)
    if (!parsed.settings) return parsed.problems
    if (parsed.settings.home && template.minFree > 0)
      return [
        'kubernetes.home: a warm pod is made before its user is known and cannot mount their claim; set minFree: 0 on this template',
      ]
    return []
  }

  async create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance> {
    if (!isInstanceId(spec.id)) throw new ProviderError(NAME, `invalid instance id "${String(spec.id).slice(0, 40)}"`)
    const parsed = parseKubernetesTemplateSettings(spec.template.settings, spec.template.port)
    if (!parsed.settings)
      throw new ProviderError(NAME, `template "${spec.template.name}": ${parsed.problems.join('; ')}`, {
        kind: 'config',
      })
    const s = parsed.settings
    return this.#locks.run(spec.id, async () => {
      const name = podName(spec.id, spec.labels[LABEL_GENERATION])
      const existing = await this.#ownPod(name, spec, opts)
      if (existing) return existing
      this.#retireEarlier(spec, name, opts)
      const claim =
        s.home && spec.ownerId
          ? await this.#edge('home claim', () =>
              ensureHomeClaim(this.#c, this.#ctx.poolId, spec.ownerId!, this.settings, opts.signal),
            )
          : null
      let pod: V1Pod
      try {
        pod = await this.#c.createPod(podManifest(spec, s, claim), opts.signal)
      } catch (err) {
        const e = toKubeError(err, 'create pod')
        // Another process made it a moment ago (or our own earlier try that timed out): adopt it.
        if (e.status === 409) {
          const other = await this.#edge('get pod', () => this.#c.getPod(name, opts.signal))
          if (other && studiopoolLabels(other.metadata ?? {})[LABEL_INSTANCE] === spec.id) {
            this.#pods!.observe(other)
            return podInstance(other, undefined)
          }
        }
        throw this.#translate(e)
      }
      this.#pods!.observe(pod)
      opts.log.info({ instanceId: spec.id, pod: name, namespace: this.namespace }, 'kubernetes: pod created')
      return podInstance(pod, undefined)
    })
  }

  async describe(refs: readonly string[], opts: OperationOptions): Promise<Map<string, ProviderInstance>> {
    const wanted = new Set(refs)
    const out = new Map<string, ProviderInstance>()
    if (!wanted.size) return out
    for (const inst of await this.list(opts)) if (wanted.has(inst.ref)) out.set(inst.ref, inst)
    return out
  }

  async list(opts: OperationOptions): Promise<ProviderInstance[]> {
    const pods = this.#ready()
    const now = this.#now()
    const out: ProviderInstance[] = []
    for (const pod of pods.values()) {
      const inst = podInstance(pod, this.#lastEvent.get(pod.metadata?.name ?? ''))
      const uid = pod.metadata?.uid ?? ''
      if (this.#deleted.has(uid)) {
        out.push({ ...inst, state: 'terminated', address: null })
        continue
      }
      out.push(inst)
      if (inst.state === 'terminated') this.#sweepEnded(pod, now, opts)
    }
    for (const [ref, t] of this.#tombstones) {
      if (now - t.at > this.settings.lostRetentionMs) this.#tombstones.delete(ref)
      else out.push(t.inst)
    }
    for (const [uid, at] of this.#deleted) if (now - at > this.settings.lostRetentionMs) this.#deleted.delete(uid)
    return out
  }

  async destroy(ref: string, opts: OperationOptions): Promise<void> {
    const target = parseRef(ref)
    if (!target) return
    const pod = this.#ready().get(target.name)
    if (pod && pod.metadata?.uid !== target.uid) return // a newer pod of that name: ours is gone
    const instanceId = pod ? studiopoolLabels(pod.metadata ?? {})[LABEL_INSTANCE] : undefined
    await this.#locks.run(instanceId ?? target.name, async () => {
      const grace = pod?.spec?.terminationGracePeriodSeconds ?? null
      await this.#edge('delete pod', () => this.#c.deletePod(target.name, target.uid, grace, opts.signal))
      this.#deleted.set(target.uid, this.#now())
      this.#tombstones.delete(ref)
    })
  }

  async relabel(ref: string, labels: Readonly<Record<string, string>>, opts: OperationOptions): Promise<void> {
    const target = parseRef(ref)
    const pod = target ? this.#ready().get(target.name) : undefined
    if (!target || !pod || pod.metadata?.uid !== target.uid) return
    const merged = { ...studiopoolLabels(pod.metadata ?? {}), ...labels }
    const k = kubeLabels(labels)
    const all = kubeLabels(merged)
    const patched = await this.#edge('relabel pod', () =>
      this.#c.patchPodMetadata(
        target.name,
        { labels: k.labels, annotations: { [K8S_ANNOTATION_LABELS]: all.annotation } },
        opts.signal,
      ),
    ).catch((err: unknown) => {
      if (err instanceof ProviderError && /not found/i.test(err.message)) return null
      throw err
    })
    if (patched) this.#pods!.observe(patched)
  }

  async listHomes(opts: OperationOptions, ownerId?: string): Promise<HomeList> {
    const sel = `${K8S_LABEL_POOL}=${labelValue(this.#ctx.poolId)},${K8S_LABEL_ROLE}=home`
    try {
      const claims = await this.#c.listClaims(sel, opts.signal)
      const homes = claims.map((c) => homeRecord(c, this.namespace)).filter((h) => !ownerId || h.owner === ownerId)
      return { homes, unreachable: [] }
    } catch (err) {
      if (toKubeError(err, 'list claims').unreachable)
        return { homes: [], unreachable: [`Kubernetes namespace ${this.namespace}`] }
      throw this.#translate(toKubeError(err, 'list claims'))
    }
  }

  async deleteHome(ref: string, opts: OperationOptions): Promise<'deleted' | 'absent' | 'in-use'> {
    if (!/^studiopool-home-[a-z0-9-]{1,60}$/.test(ref)) return 'absent'
    const inUse = this.#ready()
      .values()
      .some(
        (p) =>
          !this.#deleted.has(p.metadata?.uid ?? '') &&
          !['Failed', 'Succeeded'].includes(p.status?.phase ?? '') &&
          p.spec?.volumes?.some((v) => v.persistentVolumeClaim?.claimName === ref),
      )
    if (inUse) return 'in-use'
    const claim = await this.#edge('get claim', () => this.#c.getClaim(ref, opts.signal))
    if (!claim || claim.metadata?.labels?.[K8S_LABEL_POOL] !== labelValue(this.#ctx.poolId)) return 'absent'
    return (await this.#edge('delete claim', () => this.#c.deleteClaim(ref, opts.signal))) ? 'deleted' : 'absent'
  }

  async close(): Promise<void> {
    // Pods are left running: a restarted server finds them in its first list.
    await Promise.all([this.#pods?.stop(), this.#events?.stop()])
  }

  // --- internals -------------------------------------------------------------------------

  get #c(): KubeClient {
    if (!this.#client) throw new ProviderError(NAME, 'the kubernetes provider was not initialised')
    return this.#client
  }

  #ready(): Reflector<V1Pod> {
    if (!this.#pods?.synced) throw new ProviderError(NAME, 'the pod cache is not synced yet', { retryable: true })
    return this.#pods
  }

  /** The instance's pod of this generation, when it has a live one; a dead one is deleted and waited out. */
  async #ownPod(name: string, spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance | null> {
    const pods = this.#ready()
    const cur = pods.get(name)
    if (!cur) return null
    const inst = podInstance(cur, this.#lastEvent.get(name))
    if (inst.state !== 'terminated' && !this.#deleted.has(cur.metadata?.uid ?? '')) return inst
    if (!this.#deleted.has(cur.metadata?.uid ?? '') && !cur.metadata?.deletionTimestamp)
      await this.#edge('delete pod', () => this.#c.deletePod(name, cur.metadata?.uid ?? null, 0, opts.signal))
    const deadline = this.#now() + spec.template.startTimeoutMs
    while (pods.get(name)?.metadata?.uid === cur.metadata?.uid) {
      if (this.#now() > deadline)
        throw new ProviderError(NAME, `pod ${name} is still being deleted; try again`, { retryable: true })
      await sleep(50, undefined, { signal: opts.signal })
    }
    return null
  }

  /** Live pods of earlier generations of this instance (a replaced one that came back) are deleted. */
  #retireEarlier(spec: InstanceSpec, keep: string, opts: OperationOptions): void {
    for (const p of this.#ready().values()) {
      const name = p.metadata?.name ?? ''
      if (name === keep || studiopoolLabels(p.metadata ?? {})[LABEL_INSTANCE] !== spec.id) continue
      if (this.#deleted.has(p.metadata?.uid ?? '')) continue
      this.#deleted.set(p.metadata?.uid ?? '', this.#now())
      this.#c.deletePod(name, p.metadata?.uid ?? null, 0).catch((err: unknown) => {
        this.#deleted.delete(p.metadata?.uid ?? '')
        opts.log.warn(
          { pod: name, err: (err as Error).message },
          'kubernetes: cannot delete an earlier pod of the instance',
        )
      })
    }
  }

  /**
   * A pod that ended (evicted, failed) stays in the API until someone deletes it: replacements delete
   * their predecessor, and any other is deleted here once it has been listed as ended for
   * `lostRetention`, so lost pods do not pile up in the namespace.
   */
  #sweepEnded(pod: V1Pod, now: number, opts: OperationOptions): void {
    const uid = pod.metadata?.uid ?? ''
    const since = this.#endedSince.get(uid)
    if (since === undefined) return void this.#endedSince.set(uid, now)
    if (now - since < this.settings.lostRetentionMs) return
    this.#deleted.set(uid, now)
    this.#endedSince.delete(uid)
    this.#c.deletePod(pod.metadata?.name ?? '', uid, 0).catch((err: unknown) => {
      this.#deleted.delete(uid)
      opts.log.warn({ pod: pod.metadata?.name, err: (err as Error).message }, 'kubernetes: cannot delete an ended pod')
    })
  }

  #gone(pod: V1Pod): void {
    const uid = pod.metadata?.uid ?? ''
    this.#endedSince.delete(uid)
    this.#lastEvent.delete(pod.metadata?.name ?? '')
    if (this.#deleted.has(uid)) return
    const inst = podInstance(pod, undefined)
    const message =
      inst.state === 'terminated' && inst.message
        ? inst.message
        : 'the pod was deleted outside studiopool (kubectl delete, a node drain)'
    this.#tombstones.set(podRef(pod), {
      at: this.#now(),
      inst: { ...inst, state: 'terminated', address: null, message },
    })
  }

  #noteEvent(e: V1Event): void {
    const name = e.involvedObject?.name ?? ''
    if (!name.startsWith('studiopool-') || !this.#pods?.get(name)) return
    this.#lastEvent.set(name, e)
  }

  /** One API call at the provider's edge: its failure as a ProviderError. */
  async #edge<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      throw this.#translate(toKubeError(err, what))
    }
  }

  #translate(e: KubeApiError): ProviderError {
    return translateKubeError(e)
  }
}

export function createKubernetesProvider(
  ctx: ProviderContext,
  deps: { client?: KubeClient; now?: () => number } = {},
): KubernetesProvider {
  return new KubernetesProvider(ctx, deps)
}
