import { setTimeout as sleep } from 'node:timers/promises'
import type { TemplateConfig } from '../../config/types.js'
import { ProviderError } from '../../domain/errors.js'
import {
  LABEL_INSTANCE,
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

const NAME = 'fake'

/**
 * Settings, provider-wide (`providers.fake`) and per template (`templates[].settings`, which win):
 * - `startDelayMs` (default 0): an instance is `pending` this long after create, then `running`.
 * - `address`: the base URL every instance reports (e.g. a test HTTP server); default
 *   `http://fake.invalid/<instanceId>`.
 * - `cloud`: name of a process-wide in-memory backend; providers built with the same name share
 *   their resources, so a "restarted server" in the same process finds them again. Default: a
 *   backend of its own.
 * - `latencyMs` (default 0): every call waits this long, for benchmarks.
 * - `supportsSuspend` (default true): whether stop/start are offered.
 * - `isolation` (provider-wide; a test and development knob): the IsolationReport `isolation()`
 *   returns, `{isolated?, sessionsReachLoopback?, sessionNetworks?, notes?}` (defaults: true, false,
 *   [], []), to drive the login rules that depend on it (issue 8). Absent: no `isolation()` at all,
 *   as the fake runs no session code.
 * - `validationError` (template only): `validateTemplate` reports this text, to exercise a server
 *   refusing one broken template while serving the others.
 */
export interface FakeSettings {
  readonly startDelayMs: number
  readonly address: string | null
  readonly cloud: string | null
  readonly latencyMs: number
  readonly supportsSuspend: boolean
  readonly isolation: IsolationReport | null
}

const KNOWN_TEMPLATE_KEYS = new Set(['startDelayMs', 'address', 'validationError'])

export type FakeMethod = 'create' | 'describe' | 'list' | 'destroy' | 'stop' | 'start' | 'relabel'

/** One resource in the fake backend. */
export interface FakeResource {
  readonly ref: string
  /** Follows the instance label (a relabel may move the resource to another instance). */
  instanceId: string
  readonly template: string
  readonly labels: Record<string, string>
  readonly createdAt: number
  /** When it turns from pending to running. */
  runningAt: number
  state: 'pending' | 'running' | 'stopped' | 'terminated'
  address: string | null
}

/**
 * Resources by ref, indexed by instance id as they are set, so that finding an instance's resource
 * does not scan every resource ever made (it did on every create: the at-minFree bench makes
 * thousands). Entries deleted or changed behind the index's back are checked at lookup.
 */
class ResourceMap extends Map<string, FakeResource> {
  readonly #byInstance = new Map<string, Set<string>>()
  override set(ref: string, r: FakeResource): this {
    let refs = this.#byInstance.get(r.instanceId)
    if (!refs) this.#byInstance.set(r.instanceId, (refs = new Set()))
    refs.add(ref)
    return super.set(ref, r)
  }
  /** The resources that were set for this instance id and are still here. */
  *ofInstance(instanceId: string): Generator<FakeResource> {
    const refs = this.#byInstance.get(instanceId)
    if (!refs) return
    for (const ref of refs) {
      const r = this.get(ref)
      if (r?.instanceId === instanceId) yield r
      else refs.delete(ref)
    }
  }
}

/** The in-memory "cloud": resources by ref. Shareable between provider objects (`settings.cloud`). */
export class FakeCloud {
  static readonly #named = new Map<string, FakeCloud>()
  /** The backend called `name`, created on first use. */
  static named(name: string): FakeCloud {
    let c = FakeCloud.#named.get(name)
    if (!c) FakeCloud.#named.set(name, (c = new FakeCloud()))
    return c
  }
  /** Forgets a named backend (tests). */
  static drop(name: string): void {
    FakeCloud.#named.delete(name)
  }

  readonly resources = new ResourceMap()
  #seq = 0
  nextRef(): string {
    return `fake-${(++this.#seq).toString(36).padStart(6, '0')}`
  }
}

/**
 * A first-class in-memory provider: dev mode runs on it, and the pool-engine property tests and
 * the reconcile benchmark drive it. No processes, no sockets. Faults are programmable
 * (`failNext`, `failCreate`, `vanish`, `addUnknown`) and every call is counted (`calls`).
 */
export class FakeProvider implements Provider {
  readonly name = NAME
  readonly capabilities: ProviderCapabilities
  /** Calls per method since construction (or `resetCalls()`). */
  readonly calls: Record<FakeMethod, number> = {
    create: 0,
    describe: 0,
    list: 0,
    destroy: 0,
    stop: 0,
    start: 0,
    relabel: 0,
  }
  /**
   * Hook consulted on every create that would make a new resource: return (or throw) an Error to
   * fail that create. Idempotent re-creates of a live resource do not consult it.
   */
  failCreate: ((spec: InstanceSpec) => Error | undefined | void) | undefined
  readonly cloud: FakeCloud
  readonly poolId: string
  readonly settings: FakeSettings
  readonly #now: () => number
  readonly #faults: Record<FakeMethod, Error[]> = {
    create: [],
    describe: [],
    list: [],
    destroy: [],
    stop: [],
    start: [],
    relabel: [],
  }

  constructor(ctx: Pick<ProviderContext, 'poolId' | 'settings'>, opts: { now?: () => number; cloud?: FakeCloud } = {}) {
    this.poolId = ctx.poolId
    this.settings = parseFakeSettings(ctx.settings)
    this.cloud = opts.cloud ?? (this.settings.cloud ? FakeCloud.named(this.settings.cloud) : new FakeCloud())
    this.capabilities = { supportsSuspend: this.settings.supportsSuspend }
    this.#now = opts.now ?? Date.now
    if (!this.settings.supportsSuspend) {
      // Not offered at all, as with a backend that cannot suspend.
      this.stop = undefined
      this.start = undefined
    }
    const report = this.settings.isolation
    if (report) this.isolation = () => report
  }

  /** Set only when `settings.isolation` is given. */
  isolation?: () => IsolationReport

  // --- fault injection and inspection ---------------------------------------------------

  /** The next `times` calls of `method` fail with `error` (default: a retryable ProviderError). */
  failNext(method: FakeMethod, error?: Error | string, times = 1): void {
    for (let i = 0; i < times; i++) {
      this.#faults[method].push(
        error instanceof Error
          ? error
          : new ProviderError(NAME, error ?? `injected ${method} fault`, { retryable: true }),
      )
    }
  }

  failNextCreate(error?: Error | string, times = 1): void {
    this.failNext('create', error, times)
  }

  /**
   * The resource disappears behind our back, as a reclaimed spot VM or a crashed process:
   * `gone` (default) removes it entirely, `terminated` leaves it listed as terminated.
   * Takes a ref or an instanceId; returns whether something vanished.
   */
  vanish(refOrInstanceId: string, mode: 'gone' | 'terminated' = 'gone'): boolean {
    const res = this.cloud.resources.get(refOrInstanceId) ?? this.#live(refOrInstanceId)
    if (!res) return false
    if (mode === 'gone') this.cloud.resources.delete(res.ref)
    else {
      res.state = 'terminated'
      res.address = null
    }
    return true
  }

  /** A resource tagged with this pool that the store does not know (an orphan). */
  addUnknown(
    opts: {
      instanceId?: string
      template?: string
      labels?: Record<string, string>
      state?: FakeResource['state']
    } = {},
  ): ProviderInstance {
    const instanceId = opts.instanceId ?? `orphan${this.cloud.nextRef().replace(/[^a-z0-9]/g, '')}`
    const template = opts.template ?? 'orphan'
    const ref = this.cloud.nextRef()
    const now = this.#now()
    const res: FakeResource = {
      ref,
      instanceId,
      template,
      labels: { ...opts.labels, [LABEL_POOL]: this.poolId, [LABEL_INSTANCE]: instanceId, [LABEL_TEMPLATE]: template },
      createdAt: now,
      runningAt: now,
      state: opts.state ?? 'running',
      address: this.settings.address ?? `http://fake.invalid/${instanceId}`,
    }
    this.cloud.resources.set(ref, res)
    return this.#view(res)
  }

  /** Snapshot of this pool's resources, whatever their state. */
  instances(): ProviderInstance[] {
    return [...this.cloud.resources.values()]
      .filter((r) => r.labels[LABEL_POOL] === this.poolId)
      .map((r) => this.#view(r))
  }

  /** Removes terminated resources (a cloud forgets them after a while). */
  purgeTerminated(): void {
    for (const [ref, r] of this.cloud.resources) if (r.state === 'terminated') this.cloud.resources.delete(ref)
  }

  resetCalls(): void {
    for (const k of Object.keys(this.calls) as FakeMethod[]) this.calls[k] = 0
  }

  // --- Provider ------------------------------------------------------------------------

  async init(_opts: OperationOptions): Promise<void> {}

  validateTemplate(template: TemplateConfig): string[] {
    const s = template.settings ?? {}
    const problems: string[] = []
    for (const k of Object.keys(s))
      if (!KNOWN_TEMPLATE_KEYS.has(k)) problems.push(`settings.${k}: unknown setting of the fake provider`)
    if (s.startDelayMs !== undefined && !(typeof s.startDelayMs === 'number' && s.startDelayMs >= 0))
      problems.push('settings.startDelayMs: must be a number ≥ 0')
    if (s.address !== undefined && !(typeof s.address === 'string' && /^https?:\/\//.test(s.address)))
      problems.push('settings.address: must be an http(s) URL')
    if (typeof s.validationError === 'string') problems.push(s.validationError)
    return problems
  }

  async create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance> {
    await this.#enter('create', opts)
    const existing = this.#live(spec.id)
    if (existing) return this.#view(existing)
    let hooked: Error | undefined | void
    try {
      hooked = this.failCreate?.(spec)
    } catch (err) {
      hooked = err instanceof Error ? err : new Error(String(err))
    }
    if (hooked) throw hooked
    const t = spec.template.settings ?? {}
    const delay = typeof t.startDelayMs === 'number' ? t.startDelayMs : this.settings.startDelayMs
    const address = typeof t.address === 'string' ? t.address : this.settings.address
    const now = this.#now()
    const res: FakeResource = {
      ref: this.cloud.nextRef(),
      instanceId: spec.id,
      template: spec.template.name,
      labels: {
        ...spec.labels,
        [LABEL_POOL]: this.poolId,
        [LABEL_INSTANCE]: spec.id,
        [LABEL_TEMPLATE]: spec.template.name,
      },
      createdAt: now,
      runningAt: now + delay,
      state: delay > 0 ? 'pending' : 'running',
      address: address ?? `http://fake.invalid/${spec.id}`,
    }
    this.cloud.resources.set(res.ref, res)
    return this.#view(res)
  }

  async describe(refs: readonly string[], opts: OperationOptions): Promise<Map<string, ProviderInstance>> {
    await this.#enter('describe', opts)
    const out = new Map<string, ProviderInstance>()
    for (const ref of refs) {
      const r = this.cloud.resources.get(ref)
      if (r && r.labels[LABEL_POOL] === this.poolId) out.set(ref, this.#view(r))
    }
    return out
  }

  async list(opts: OperationOptions): Promise<ProviderInstance[]> {
    await this.#enter('list', opts)
    return this.instances()
  }

  async destroy(ref: string, opts: OperationOptions): Promise<void> {
    await this.#enter('destroy', opts)
    const r = this.cloud.resources.get(ref)
    if (!r || r.labels[LABEL_POOL] !== this.poolId) return
    r.state = 'terminated'
    r.address = null
  }

  stop? = async (ref: string, opts: OperationOptions): Promise<void> => {
    await this.#enter('stop', opts)
    const r = this.#mustGet(ref)
    this.#settle(r)
    if (r.state === 'terminated') throw new ProviderError(NAME, `instance ${r.instanceId} is terminated`)
    r.state = 'stopped'
  }

  start? = async (ref: string, opts: OperationOptions): Promise<void> => {
    await this.#enter('start', opts)
    const r = this.#mustGet(ref)
    this.#settle(r)
    if (r.state === 'terminated') throw new ProviderError(NAME, `instance ${r.instanceId} is terminated`)
    if (r.state === 'stopped') {
      const delay = this.settings.startDelayMs
      r.runningAt = this.#now() + delay
      r.state = delay > 0 ? 'pending' : 'running'
    }
  }

  /** Merges labels (the pool: owner and assignment on claim). Our pool and template labels are kept. */
  async relabel(ref: string, labels: Readonly<Record<string, string>>, opts: OperationOptions): Promise<void> {
    await this.#enter('relabel', opts)
    const r = this.cloud.resources.get(ref)
    if (!r || r.labels[LABEL_POOL] !== this.poolId) return
    Object.assign(r.labels, labels, { [LABEL_POOL]: this.poolId, [LABEL_TEMPLATE]: r.template })
    r.instanceId = r.labels[LABEL_INSTANCE] ?? r.instanceId
  }

  async close(): Promise<void> {}

  // --- internals ------------------------------------------------------------------------

  async #enter(method: FakeMethod, opts: OperationOptions): Promise<void> {
    this.calls[method]++
    opts.signal?.throwIfAborted()
    if (this.settings.latencyMs > 0) await sleep(this.settings.latencyMs, undefined, { signal: opts.signal })
    const fault = this.#faults[method].shift()
    if (fault) throw fault
  }

  /** The live (not terminated) resource of an instanceId in this pool. */
  #live(instanceId: string): FakeResource | undefined {
    for (const r of this.cloud.resources.ofInstance(instanceId)) {
      if (r.labels[LABEL_POOL] === this.poolId && r.state !== 'terminated') return r
    }
    return undefined
  }

  #mustGet(ref: string): FakeResource {
    const r = this.cloud.resources.get(ref)
    if (!r || r.labels[LABEL_POOL] !== this.poolId) throw new ProviderError(NAME, `unknown resource ${ref}`)
    return r
  }

  #settle(r: FakeResource): void {
    if (r.state === 'pending' && this.#now() >= r.runningAt) r.state = 'running'
  }

  #view(r: FakeResource): ProviderInstance {
    this.#settle(r)
    const progress =
      r.state === 'pending'
        ? Math.min(99, Math.floor(((this.#now() - r.createdAt) / Math.max(1, r.runningAt - r.createdAt)) * 100))
        : undefined
    return {
      ref: r.ref,
      instanceId: r.instanceId,
      template: r.template,
      state: r.state,
      address: r.state === 'running' || r.state === 'pending' ? r.address : null,
      labels: { ...r.labels },
      createdAt: r.createdAt,
      ...(progress !== undefined ? { progress, message: 'starting (fake)' } : {}),
    }
  }
}

export function parseFakeSettings(raw: Readonly<Record<string, unknown>> | undefined): FakeSettings {
  const s = raw ?? {}
  const num = (v: unknown, d: number): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : d)
  return {
    startDelayMs: num(s.startDelayMs, 0),
    address: typeof s.address === 'string' ? s.address : null,
    cloud: typeof s.cloud === 'string' ? s.cloud : null,
    latencyMs: num(s.latencyMs, 0),
    supportsSuspend: s.supportsSuspend !== false,
    isolation: parseIsolation(s.isolation),
  }
}

function parseIsolation(v: unknown): IsolationReport | null {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null
  const o = v as Record<string, unknown>
  const strings = (x: unknown) => (Array.isArray(x) ? x.filter((e): e is string => typeof e === 'string') : [])
  return Object.freeze({
    isolated: o.isolated !== false,
    sessionsReachLoopback: o.sessionsReachLoopback === true,
    sessionNetworks: Object.freeze(strings(o.sessionNetworks)),
    notes: Object.freeze(strings(o.notes)),
  })
}
