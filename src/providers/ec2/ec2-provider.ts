import type { Filter, Instance as Ec2Instance, RunInstancesCommandInput } from '@aws-sdk/client-ec2'
import type { TemplateConfig } from '../../config/types.js'
import { ProviderError, ValidationError } from '../../domain/errors.js'
import {
  LABEL_INSTANCE,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type OperationOptions,
  type Provider,
  type ProviderCapabilities,
  type ProviderContext,
  type ProviderInstance,
} from '../provider.js'
import { createEc2Api, type Ec2Api } from './ec2-client.js'
import {
  errorCode,
  isCapacity,
  isNotFound,
  PROVIDER,
  sleep as realSleep,
  toProviderError,
  withRetries,
  type RetryOptions,
} from './ec2-errors.js'
import { EC2_ID_RE, LIVE_EC2_STATES, tagsOf, toProviderInstance } from './ec2-instances.js'
import { LABEL_GENERATION, runInstancesInput, type Market } from './ec2-launch.js'
import {
  loadUserDataTemplate,
  parseProviderSettings,
  parseTemplateSettings,
  type Ec2ProviderSettings,
  type Ec2TemplateSettings,
} from './ec2-provider-config.js'

export { clientToken, DEFAULT_PORT, instanceTags, LABEL_GENERATION } from './ec2-launch.js'

/** Bounds on pagination loops: 1000 pages × 1000 instances is far beyond any pool. */
const MAX_PAGES = 1000
const LIST_PAGE_SIZE = 1000

export interface Ec2ProviderDeps {
  /** Defaults to the SDK-backed client (`createEc2Api`). */
  readonly api?: Ec2Api
  /** Injectable so that tests do not wait for backoff. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
  readonly random?: () => number
}

/**
 * `ec2` provider (architecture.md contract 4): one EC2 instance per studiopool instance, tagged with the
 * pool id, instanceId and template. It translates; it does not decide, and it never writes to the store.
 */
export class Ec2Provider implements Provider {
  readonly name = 'ec2'
  readonly capabilities: ProviderCapabilities = { supportsSuspend: true, remoteInstances: true }

  readonly #ctx: ProviderContext
  readonly #settings: Ec2ProviderSettings
  readonly #api: Ec2Api
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>
  readonly #random: () => number
  #region: string | undefined
  /** Parsed settings and user-data text per template object (templates are frozen config). */
  readonly #templates = new WeakMap<TemplateConfig, { settings: Ec2TemplateSettings; userData: string }>()
  /** Templates seen, by name, so that describe/list know each resource's port and address setting. */
  readonly #templatesByName = new Map<string, TemplateConfig>()

  constructor(ctx: ProviderContext, deps: Ec2ProviderDeps = {}) {
    const parsed = parseProviderSettings(ctx.settings)
    if (!parsed.settings) {
      throw new ValidationError(
        'invalid providers.ec2 settings',
        parsed.problems.map((message) => ({ path: 'providers.ec2', message })),
      )
    }
    this.#ctx = ctx
    this.#settings = parsed.settings
    this.#api = deps.api ?? createEc2Api({ region: parsed.settings.region })
    this.#sleep = deps.sleep ?? realSleep
    this.#random = deps.random ?? Math.random
  }

  get settings(): Ec2ProviderSettings {
    return this.#settings
  }

  #retry(opts: OperationOptions): RetryOptions {
    return {
      maxRetries: this.#settings.maxRetries,
      baseDelayMs: this.#settings.retryBaseDelayMs,
      maxDelayMs: this.#settings.retryMaxDelayMs,
      sleep: this.#sleep,
      random: this.#random,
      signal: opts.signal,
      onRetry: (info) => opts.log.warn({ provider: PROVIDER, ...info }, 'ec2 call failed transiently; backing off'),
    }
  }

  /** One API call with retries; errors other than "not found" become ProviderError. */
  async #call<T>(operation: string, opts: OperationOptions, fn: () => Promise<T>, context = ''): Promise<T> {
    try {
      return await withRetries(operation, fn, this.#retry(opts))
    } catch (err) {
      if (isNotFound(err)) throw err
      throw toProviderError(err, operation, context)
    }
  }

  async #resolveRegion(): Promise<string> {
    if (this.#region) return this.#region
    try {
      this.#region = this.#settings.region ?? (await this.#api.region())
    } catch (err) {
      throw new ProviderError(
        PROVIDER,
        'no AWS region: set providers.ec2.region or AWS_REGION (or a profile with a region)',
        {
          code: 'PROVIDER_UNAVAILABLE',
          cause: err,
        },
      )
    }
    if (!this.#region)
      throw new ProviderError(PROVIDER, 'no AWS region: set providers.ec2.region or AWS_REGION', {
        code: 'PROVIDER_UNAVAILABLE',
      })
    return this.#region
  }

  /**
   * Resolves the region and checks credentials and the DescribeInstances permission with a dry run
   * (AWS answers `DryRunOperation` when the call would have been allowed).
   */
  async init(opts: OperationOptions): Promise<void> {
    const region = await this.#resolveRegion()
    try {
      await withRetries(
        'DescribeInstances',
        () => this.#api.describeInstances({ DryRun: true }, opts.signal),
        this.#retry(opts),
      )
    } catch (err) {
      if (errorCode(err) !== 'DryRunOperation') throw toProviderError(err, 'DescribeInstances', 'credentials check')
    }
    opts.log.info({ provider: PROVIDER, region }, 'ec2 provider ready')
  }

  validateTemplate(template: TemplateConfig): string[] {
    const parsed = parseTemplateSettings(template.name, template.settings)
    if (!parsed.settings) return parsed.problems
    const ud = loadUserDataTemplate(parsed.settings, template.name)
    if (ud.text === undefined) return ud.problems
    this.#templates.set(template, { settings: parsed.settings, userData: ud.text })
    this.#templatesByName.set(template.name, template)
    return []
  }

  keyPairName(template: TemplateConfig): string | undefined {
    return parseTemplateSettings(template.name, template.settings).settings?.keyName
  }

  #template(template: TemplateConfig): { settings: Ec2TemplateSettings; userData: string } {
    const cached = this.#templates.get(template)
    if (cached) return cached
    const problems = this.validateTemplate(template)
    if (problems.length) {
      // A configuration bug, found at launch: the instance fails with the problems as its reason.
      throw new ProviderError(PROVIDER, `template ${template.name} has invalid ec2 settings: ${problems.join('; ')}`, {
        retryable: false,
        kind: 'config',
      })
    }
    return this.#templates.get(template)!
  }

  /** The RunInstances input for one attempt (exported through the class for tests and docs). */
  async buildRunInput(spec: InstanceSpec, market: Market, salt = ''): Promise<RunInstancesCommandInput> {
    const { settings, userData } = this.#template(spec.template)
    const region = await this.#resolveRegion()
    return runInstancesInput(spec, { settings, userData, region }, market, salt)
  }

  #toProviderInstance(inst: Ec2Instance, knownTemplate?: TemplateConfig): ProviderInstance {
    const template = knownTemplate ?? this.#templatesByName.get(tagsOf(inst)[LABEL_TEMPLATE] ?? '')
    const addressFrom = (template && this.#templates.get(template)?.settings.addressFrom) ?? this.#settings.addressFrom
    return toProviderInstance(inst, template, addressFrom)
  }

  /** Follows NextToken, bounded. */
  async #describeAll(
    input: { Filters?: Filter[]; InstanceIds?: string[] },
    opts: OperationOptions,
  ): Promise<Ec2Instance[]> {
    const out: Ec2Instance[] = []
    let token: string | undefined
    for (let page = 0; page < MAX_PAGES; page++) {
      const req = {
        ...input,
        ...(input.InstanceIds ? {} : { MaxResults: LIST_PAGE_SIZE }),
        ...(token ? { NextToken: token } : {}),
      }
      const res = await this.#call('DescribeInstances', opts, () => this.#api.describeInstances(req, opts.signal))
      for (const r of res.Reservations ?? []) out.push(...(r.Instances ?? []))
      token = res.NextToken || undefined
      if (!token) return out
    }
    throw new ProviderError(PROVIDER, `DescribeInstances returned more than ${MAX_PAGES} pages`, { retryable: true })
  }

  /** Our live resource for this instanceId (and generation, when given), newest first. */
  async #findExisting(spec: InstanceSpec, opts: OperationOptions): Promise<Ec2Instance | undefined> {
    const filters: Filter[] = [
      { Name: `tag:${LABEL_POOL}`, Values: [spec.poolId] },
      { Name: `tag:${LABEL_INSTANCE}`, Values: [spec.id] },
      { Name: 'instance-state-name', Values: LIVE_EC2_STATES },
    ]
    const gen = spec.labels[LABEL_GENERATION]
    if (gen !== undefined) filters.push({ Name: `tag:${LABEL_GENERATION}`, Values: [gen] })
    const found = await this.#describeAll({ Filters: filters }, opts)
    return found.sort(
      (a, b) => (b.LaunchTime ? +new Date(b.LaunchTime) : 0) - (a.LaunchTime ? +new Date(a.LaunchTime) : 0),
    )[0]
  }

  /**
   * Launches one instance. Idempotent on spec.id (and generation): an existing live instance with our
   * labels is returned, and the ClientToken makes a repeated RunInstances return the first launch.
   * Spot capacity errors fall back to on-demand when the template allows it.
   * @throws ProviderError (retryable for capacity and throttling; PROVIDER_UNAVAILABLE for auth).
   */
  async create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance> {
    const { settings } = this.#template(spec.template)
    const existing = await this.#findExisting(spec, opts)
    if (existing) {
      opts.log.info(
        { provider: PROVIDER, instanceId: spec.id, ref: existing.InstanceId },
        'ec2 instance already exists; not launching another',
      )
      return this.#toProviderInstance(existing, spec.template)
    }
    const log = opts.log.child({ provider: PROVIDER, instanceId: spec.id, template: spec.template.name })
    if (settings.spot.enabled) {
      try {
        return await this.#run(spec, 'spot', opts)
      } catch (err) {
        const cause = err instanceof ProviderError ? err.cause : err
        if (!isCapacity(cause) || !settings.spot.fallbackToOnDemand) throw err
        log.warn({ code: errorCode(cause) }, 'no spot capacity; falling back to on-demand')
      }
    }
    return await this.#run(spec, 'on-demand', opts)
  }

  async #run(spec: InstanceSpec, market: Market, opts: OperationOptions): Promise<ProviderInstance> {
    let salt = ''
    // A ClientToken stays bound to its instance for a while after termination: when the token
    // returns an instance that is already gone (this instanceId was launched, terminated, and is
    // now launched again without a new generation), derive a new token from the dead instance's id.
    // Deterministic, so a retry of this create lands on the same new instance. Bounded.
    for (let hop = 0; hop < 3; hop++) {
      const input = await this.buildRunInput(spec, market, salt)
      // The input holds the progress token in UserData: log the token and shape only, never the input.
      opts.log.info(
        {
          provider: PROVIDER,
          instanceId: spec.id,
          market,
          clientToken: input.ClientToken,
          instanceType: input.InstanceType,
        },
        'ec2 RunInstances',
      )
      const res = await this.#call(
        'RunInstances',
        opts,
        () => this.#api.runInstances(input, opts.signal),
        market === 'spot' ? 'spot' : '',
      )
      const inst = res.Instances?.[0]
      if (!inst?.InstanceId) throw new ProviderError(PROVIDER, 'RunInstances returned no instance', { retryable: true })
      const state = inst.State?.Name
      if (state !== 'terminated' && state !== 'shutting-down') return this.#toProviderInstance(inst, spec.template)
      salt = `${salt}/${inst.InstanceId}`
    }
    throw new ProviderError(PROVIDER, `RunInstances kept returning terminated instances for ${spec.id}`, {
      retryable: false,
    })
  }

  /**
   * One DescribeInstances per `describeBatchSize` refs (the MLiy lesson: the worker makes O(1) calls
   * per cycle). Refs AWS does not know are absent from the map, never an error.
   */
  async describe(refs: readonly string[], opts: OperationOptions): Promise<Map<string, ProviderInstance>> {
    const out = new Map<string, ProviderInstance>()
    const ids = [...new Set(refs)].filter((r) => EC2_ID_RE.test(r))
    const size = this.#settings.describeBatchSize
    for (let i = 0; i < ids.length; i += size) {
      for (const inst of await this.#describeBatch(ids.slice(i, i + size), opts)) {
        if (inst.InstanceId) out.set(inst.InstanceId, this.#toProviderInstance(inst))
      }
    }
    return out
  }

  async #describeBatch(batch: string[], opts: OperationOptions): Promise<Ec2Instance[]> {
    let ids = batch
    // InvalidInstanceID.NotFound names the missing ids; drop them and ask again (bounded by the batch size).
    for (let round = 0; round <= batch.length && ids.length > 0; round++) {
      try {
        return await this.#describeAll({ InstanceIds: ids }, opts)
      } catch (err) {
        if (!isNotFound(err)) throw err
        const missing = new Set((err as Error).message.match(/i-[0-9a-f]+/g) ?? [])
        const rest = ids.filter((id) => !missing.has(id))
        if (rest.length === ids.length) {
          // The message named none of our ids: an id filter never fails on unknown ids.
          return await this.#describeAll({ Filters: [{ Name: 'instance-id', Values: ids }] }, opts)
        }
        ids = rest
      }
    }
    return []
  }

  /** Every instance tagged with our pool id, in every state (terminated ones show for about an hour). */
  async list(opts: OperationOptions): Promise<ProviderInstance[]> {
    const found = await this.#describeAll(
      { Filters: [{ Name: `tag:${LABEL_POOL}`, Values: [this.#ctx.poolId] }] },
      opts,
    )
    return found.map((inst) => this.#toProviderInstance(inst))
  }

  /** TerminateInstances; an unknown or malformed ref resolves. */
  async destroy(ref: string, opts: OperationOptions): Promise<void> {
    if (!EC2_ID_RE.test(ref)) return
    try {
      await this.#call(
        'TerminateInstances',
        opts,
        () => this.#api.terminateInstances({ InstanceIds: [ref] }, opts.signal),
        ref,
      )
      opts.log.info({ provider: PROVIDER, ref }, 'ec2 instance terminating')
    } catch (err) {
      if (isNotFound(err)) return
      throw err
    }
  }

  /** StopInstances (suspend: the EBS root volume is kept). One-time spot instances cannot be stopped. */
  async stop(ref: string, opts: OperationOptions): Promise<void> {
    await this.#stateChange('StopInstances', ref, opts, () =>
      this.#api.stopInstances({ InstanceIds: [ref] }, opts.signal),
    )
  }

  /** StartInstances (resume). The private IP stays; a public IP or DNS name may change. */
  async start(ref: string, opts: OperationOptions): Promise<void> {
    await this.#stateChange('StartInstances', ref, opts, () =>
      this.#api.startInstances({ InstanceIds: [ref] }, opts.signal),
    )
  }

  async #stateChange(
    operation: string,
    ref: string,
    opts: OperationOptions,
    fn: () => Promise<unknown>,
  ): Promise<void> {
    if (!EC2_ID_RE.test(ref))
      throw new ProviderError(PROVIDER, `not an EC2 instance id: ${JSON.stringify(ref.slice(0, 40))}`)
    try {
      await this.#call(operation, opts, fn, ref)
    } catch (err) {
      if (isNotFound(err))
        throw new ProviderError(PROVIDER, `EC2 instance ${ref} no longer exists`, { retryable: false, cause: err })
      if (errorCode((err as ProviderError).cause) === 'UnsupportedOperation') {
        throw new ProviderError(
          PROVIDER,
          `EC2 instance ${ref} cannot be ${operation === 'StopInstances' ? 'stopped' : 'started'} (spot instances launched as one-time requests cannot be suspended)`,
          {
            retryable: false,
            cause: err,
          },
        )
      }
      throw err
    }
  }

  /**
   * CreateTags on the instance (and nothing else): the owner and assignment on claim, the instanceId
   * on a hand-over. Our pool and template tags are never rewritten; docs/aws.md's policy allows
   * CreateTags only on this pool's instances and only for these keys. An unknown ref resolves.
   */
  async relabel(ref: string, labels: Readonly<Record<string, string>>, opts: OperationOptions): Promise<void> {
    if (!EC2_ID_RE.test(ref)) return
    const tags = Object.entries(labels).filter(([k]) => k !== LABEL_POOL && k !== LABEL_TEMPLATE)
    if (!tags.length) return
    try {
      await this.#call(
        'CreateTags',
        opts,
        () =>
          this.#api.createTags({ Resources: [ref], Tags: tags.map(([Key, Value]) => ({ Key, Value })) }, opts.signal),
        ref,
      )
    } catch (err) {
      if (isNotFound(err)) return
      throw err
    }
  }

  async close(): Promise<void> {
    this.#api.destroy()
  }
}

export function createEc2Provider(ctx: ProviderContext, deps: Ec2ProviderDeps = {}): Ec2Provider {
  return new Ec2Provider(ctx, deps)
}
