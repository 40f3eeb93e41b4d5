import type { Logger } from 'pino'
import type { TemplateConfig } from '../config/types.js'

/** Options every provider operation accepts. */
export interface OperationOptions {
  readonly signal?: AbortSignal
  readonly log: Logger
}

/** Labels every resource carries (architecture.md contract 4), so the store can be rebuilt from the provider. */
export const LABEL_POOL = 'studiopool:pool'
export const LABEL_INSTANCE = 'studiopool:instance'
export const LABEL_TEMPLATE = 'studiopool:template'
export const LABEL_OWNER = 'studiopool:owner'
/** Set with the owner: when the assignment began (epoch ms) and the requester key's name. */
export const LABEL_ASSIGNED_AT = 'studiopool:assigned-at'
export const LABEL_REQUESTER = 'studiopool:requester'

export interface InstanceSpec {
  /** studiopool instanceId; `create` is idempotent on it. */
  readonly id: string
  readonly poolId: string
  readonly template: TemplateConfig
  /** Path prefix the gateway serves the instance under, with trailing slash: `/s/<id>/`. */
  readonly basePath: string
  /** Labels to put on the resource: at least pool, instance and template (see LABEL_*). */
  readonly labels: Readonly<Record<string, string>>
  /** Where the instance may report progress (`POST`), and its bearer token. */
  readonly progressUrl: string
  readonly progressToken: string
  /**
   * Per-instance secret (`{{appToken}}` in template commands and env) that the gateway sends on every
   * upstream request of this instance (the template's `upstreamHeaders`), so that an app which checks
   * it (Jupyter's token) refuses anyone who reaches its port without the gateway (architecture.md contract 5).
   * Never logged, never written where the session's user could read another instance's.
   */
  readonly appToken: string
  /** The owner when the instance is created for a known user (cold start); null for a warm instance. */
  readonly ownerId: string | null
  /** The clean session URL users open (`https://…/s/<id>/`). */
  readonly sessionUrl: string
}

/** What a provider knows of one resource. */
export interface ProviderInstance {
  /** The provider's id (pid:starttime, EC2 instance id, …). */
  readonly ref: string
  /** From the resource's labels. */
  readonly instanceId: string
  readonly template: string
  /**
   * `pending`: asked for, not running yet; `running`: the resource runs (the app may not answer yet);
   * `stopped`: suspended, can be started; `terminated`: gone or going.
   */
  readonly state: 'pending' | 'running' | 'stopped' | 'terminated'
  /** Base URL of the app when known: `http://10.0.0.5:8787`. */
  readonly address: string | null
  readonly labels: Readonly<Record<string, string>>
  /** Epoch ms, when the provider knows it. */
  readonly createdAt: number | null
  /** Provider-side progress hint (0–100) and message, when it has one. */
  readonly progress?: number
  readonly message?: string
  /**
   * Set on a `terminated` resource the backend ended for a reason of its own (a batch job's time
   * limit: `lifetime`; a job that failed: `failed`): the worker ends the session with it (a starting
   * one that `failed` is failed with `message`) instead of replacing it. Optional.
   */
  readonly endReason?: 'lifetime' | 'failed'
}

/**
 * What a provider isolates (architecture.md contract 5). Facts after `init`; the server prints them at start,
 * puts them in `/readyz` details and on the admin dashboard, and the login modes consult them.
 */
export interface IsolationReport {
  /** Sessions run under accounts other than the server's and cannot read its files or signal its processes. */
  readonly isolated: boolean
  /** Session code can open connections that reach this machine's listeners from a loopback address. */
  readonly sessionsReachLoopback: boolean
  /** CIDRs from which session traffic reaches this machine's listeners (for example `10.213.0.0/16`). */
  readonly sessionNetworks: readonly string[]
  /** One line each: what is and is not isolated, and why. */
  readonly notes: readonly string[]
}

export interface ProviderCapabilities {
  /** stop/start keep the disk (suspend/resume). */
  readonly supportsSuspend: boolean
  /**
   * Instances run on other machines (VMs): a loopback callback URL would point at the instance
   * itself, so the server refuses to start such a template with one (issue 9). Default false.
   */
  readonly remoteInstances?: boolean
  /** list()'s `message`/`progress` of a starting resource are launch progress (a queue's pending reason): the worker shows them. Default false. */
  readonly reportsProgress?: boolean
}

/**
 * A Provider is the glue between the control plane and one compute backend.
 * It translates; it does not decide. It never writes to the store.
 * Errors are thrown as `ProviderError` (domain/errors.ts).
 */
export interface Provider {
  readonly name: string
  readonly capabilities: ProviderCapabilities
  /** Connects clients, checks credentials. Called once before anything else. */
  init(opts: OperationOptions): Promise<void>
  /** Checks a template's settings (and, for local, that its program exists). Returns problems, empty when fine. */
  validateTemplate(template: TemplateConfig): string[]
  /**
   * Optional: checks at start what only the backend can tell (docker: an image that may not be
   * pulled is present). Returns problems, empty when fine; the template is then unavailable
   * (`TEMPLATE_UNAVAILABLE` with the problem). Never throws for a backend that does not answer:
   * that is an outage the pool rides out, not a template problem.
   */
  checkTemplate?(template: TemplateConfig, opts: OperationOptions): Promise<string[]>
  /** Idempotent on spec.id: a second call for the same id returns the existing resource. */
  create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance>
  /** State of the given refs; a ref the backend does not know is absent from the map. One batched call. */
  describe(refs: readonly string[], opts: OperationOptions): Promise<Map<string, ProviderInstance>>
  /** Every resource labelled with this pool id, whatever its state (for recovery and orphan reaping). */
  list(opts: OperationOptions): Promise<ProviderInstance[]>
  /** Idempotent: destroying an absent resource resolves. */
  destroy(ref: string, opts: OperationOptions): Promise<void>
  stop?(ref: string, opts: OperationOptions): Promise<void>
  start?(ref: string, opts: OperationOptions): Promise<void>
  /**
   * Merges `labels` into the resource's labels (the owner and assignment on claim, the instanceId on
   * a hand-over), so that list() reports them. Optional; the pool calls it in the background and
   * only logs a failure. Labels not named are kept. Throws ProviderError; an absent ref resolves.
   */
  relabel?(ref: string, labels: Readonly<Record<string, string>>, opts: OperationOptions): Promise<void>
  /**
   * Optional: vouches for an address the instance reported itself (the job wrapper's callback, issue
   * 12): `host:port` must be where this resource really runs (its node, a port of its range), so a
   * session user cannot point the gateway at another host. Returns the base URL (`http://host:port`)
   * to route to, or null to refuse. A provider without it refuses every reported address.
   */
  acceptAddress?(ref: string, host: string, port: number, opts: AcceptAddressOptions): Promise<string | null>
  /** The SSH key pair instances of this template get (the seed's GET_STATUS `keyName`); undefined when none. */
  keyPairName?(template: TemplateConfig): string | undefined
  /** What this provider isolates; absent means sessions do not run on a host the server shares (nothing to report). */
  isolation?(): IsolationReport
  /**
   * Per-user persistent homes (volumes, claims, directories) of this pool, optionally of one owner,
   * for the admin action that lists and deletes them (architecture.md contract 4). Optional.
   */
  listHomes?(opts: OperationOptions, ownerId?: string): Promise<HomeList>
  /**
   * Deletes one home by the ref `listHomes` gave: `absent` when it is not there, `in-use` while a
   * session uses it (nothing deleted). Only ever called by an explicit admin action.
   */
  deleteHome?(ref: string, opts: OperationOptions): Promise<'deleted' | 'absent' | 'in-use'>
  /** Releases clients. Local processes are NOT killed: they survive a server restart and are found again by list(). */
  close(): Promise<void>
}

/** A user's persistent home, as `listHomes` reports it. */
export interface HomeRecord {
  /** The provider's id of the home, for `deleteHome` (docker: `<host>/<volume name>`). */
  readonly ref: string
  readonly owner: string
  readonly createdAt: string | null
  /** Where it lives, in words (`volume … on Docker host …`). */
  readonly where: string
}

export interface HomeList {
  readonly homes: readonly HomeRecord[]
  /** Places that did not answer: their homes are not listed now (not lost). */
  readonly unreachable: readonly string[]
}

export interface ProviderContext {
  readonly poolId: string
  /** Absolute data directory (local provider keeps instances under `<dataDir>/instances/<id>`). */
  readonly dataDir: string
  /** Provider-wide settings from `providers.<name>` in the config. */
  readonly settings: Readonly<Record<string, unknown>>
  readonly log: Logger
}

export interface AcceptAddressOptions extends OperationOptions {
  readonly template: TemplateConfig
}

export type ProviderFactory = (ctx: ProviderContext) => Provider
