import type { Logger } from 'pino'
import type { TemplateConfig } from '../../config/types.js'
import { ProviderError } from '../../domain/errors.js'
import { isInstanceId } from '../../domain/ids.js'
import { KeyedSerializer } from '../keyed-serializer.js'
import {
  LABEL_INSTANCE,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type AcceptAddressOptions,
  type InstanceSpec,
  type IsolationReport,
  type OperationOptions,
  type Provider,
  type ProviderCapabilities,
  type ProviderContext,
  type ProviderInstance,
} from '../provider.js'
import { SlurmCli, TERMINAL_STATES, firstLine, type SlurmJob } from './slurm-cli.js'
import { COMMENT_PREFIX, accountOf, gidOf, jobToInstance } from './slurm-jobs.js'
import {
  parseSlurmProviderSettings,
  parseSlurmTemplateSettings,
  type SlurmProviderSettings,
  type SlurmTemplateSettings,
} from './slurm-config.js'
import { isolationOf } from './slurm-isolation.js'
import { NodeHosts, commentAddressOk, vouchForAddress } from './slurm-nodes.js'
import { RecordStore, type SlurmRecord } from './slurm-records.js'
import { jobScript, substitutePath } from './slurm-script.js'
import { SqueueCache, type Snapshot } from './squeue-cache.js'

const NAME = 'slurm'
const JOB_ID_RE = /^\d{1,12}$/

/**
 * Interactive sessions as Slurm batch jobs (issue 12; docs/slurm.md). Reads the scheduler with one
 * `squeue` per poll interval however many instances there are (list and describe share it), and
 * never takes a scheduler error or a job squeue does not show for the job's end: an error fails the
 * call (the worker skips its reconcile), a missing job keeps its last state for `lostGrace`.
 */
export class SlurmProvider implements Provider {
  readonly name = NAME
  readonly capabilities: ProviderCapabilities
  readonly cli: SlurmCli
  readonly #ctx: ProviderContext
  readonly #s: SlurmProviderSettings
  readonly #records: RecordStore
  readonly #locks = new KeyedSerializer()
  /** When a recorded job was first missing from squeue (in memory: a restart starts the grace again). */
  readonly #missingSince = new Map<string, number>()
  readonly #gids = new Map<string, string>()
  readonly #nodes: NodeHosts
  #squeue: SqueueCache | undefined

  constructor(ctx: ProviderContext) {
    this.#ctx = ctx
    this.#s = parseSlurmProviderSettings(ctx.settings)
    this.cli = new SlurmCli(this.#s)
    this.#nodes = new NodeHosts(this.cli)
    this.#records = new RecordStore(ctx.dataDir)
    this.capabilities = { supportsSuspend: this.#s.suspend, reportsProgress: true }
  }

  get #prefix(): string {
    return `studiopool.${this.#ctx.poolId}.`
  }

  async init(opts: OperationOptions): Promise<void> {
    if (this.#s.runAs === 'none' && !this.#s.submitHost && process.getuid?.() === 0)
      throw new ProviderError(NAME, 'providers.slurm.runAs: none would run sessions as root; use uid or prefix')
    this.#records.init()
    // The controller answers (or init fails with its error, before any session is promised).
    const snap = await this.#query(0)
    opts.log.info({ jobs: snap.jobs.size, submitHost: this.#s.submitHost }, 'slurm: controller reachable')
  }

  isolation(): IsolationReport {
    return isolationOf(this.#s)
  }

  validateTemplate(template: TemplateConfig): string[] {
    const parsed = parseSlurmTemplateSettings(template.settings, template.maxLifetimeMs)
    if (!parsed.settings) return parsed.problems
    const problems: string[] = []
    if (template.minFree > 0 && !parsed.settings.warmUser && parsed.settings.user === '{{user}}')
      problems.push(
        'slurm.warmUser: required for warm instances (minFree > 0): a job needs an account before it has an owner',
      )
    for (const u of [parsed.settings.user, parsed.settings.warmUser])
      if (u === 'root') problems.push('slurm.user: sessions never run as root')
    return problems
  }

  // --- reading the scheduler ---------------------------------------------------------------

  /** The newest squeue answer if younger than `maxAgeMs`, else one shared new query (squeue-cache.ts). */
  #query(maxAgeMs: number): Promise<Snapshot> {
    this.#squeue ??= new SqueueCache(
      () => this.cli.squeue(),
      (j) => j.name.startsWith(this.#prefix),
    )
    return this.#squeue.query(maxAgeMs)
  }

  /** Poll interval ± 20 %: servers (and pools) sharing one controller spread their queries. */
  #maxAge(): number {
    return this.#s.pollIntervalMs * (0.8 + 0.4 * Math.random())
  }

  #invalidate(): void {
    this.#squeue?.invalidate()
  }

  async describe(refs: readonly string[], _opts: OperationOptions): Promise<Map<string, ProviderInstance>> {
    const out = new Map<string, ProviderInstance>()
    const wanted = refs.filter((r) => JOB_ID_RE.test(r))
    if (wanted.length === 0) return out
    const snap = await this.#query(this.#maxAge())
    const byJob = new Map<string, SlurmRecord>()
    for (const rec of this.#ours()) if (rec.jobId) byJob.set(rec.jobId, rec)
    for (const ref of wanted) {
      const rec = byJob.get(ref)
      if (rec) out.set(ref, this.#fromRecord(rec, snap))
      else {
        const job = snap.jobs.get(ref)
        if (job) out.set(ref, this.#unrecorded(job))
      }
    }
    return out
  }

  async list(opts: OperationOptions): Promise<ProviderInstance[]> {
    const snap = await this.#query(this.#maxAge())
    const out: ProviderInstance[] = []
    const claimed = new Set<string>()
    for (const rec of this.#ours()) {
      if (!rec.jobId) {
        const job = this.#findByName(snap, rec.jobName, rec.user)
        if (job) {
          // A server killed between sbatch and writing the job id: adopt the job, never submit another.
          await this.#locks.run(rec.instanceId, async () => {
            const cur = this.#records.read(rec.instanceId)
            if (cur && !cur.jobId && cur.jobName === rec.jobName) {
              cur.jobId = job.id
              this.#records.write(cur)
              opts.log.info(
                { instanceId: rec.instanceId, jobId: job.id },
                'slurm: adopted a job submitted before a restart',
              )
            }
          })
          rec.jobId = job.id
        } else {
          if (snap.at - rec.submittedAt > this.#s.lostGraceMs && !this.#locks.has(rec.instanceId))
            this.#records.remove(rec.instanceId) // sbatch never got through
          continue
        }
      }
      claimed.add(rec.jobId)
      const inst = this.#fromRecord(rec, snap)
      if (
        inst.state === 'terminated' &&
        rec.destroyed &&
        !snap.jobs.has(rec.jobId) &&
        !this.#locks.has(rec.instanceId)
      ) {
        this.#records.remove(rec.instanceId)
        continue
      }
      out.push(inst)
    }
    // Jobs of this pool no record names (a record lost with a data directory): listed from their
    // comment, so the pool adopts or reaps them; nothing of ours runs unseen.
    for (const job of snap.jobs.values()) if (!claimed.has(job.id)) out.push(this.#unrecorded(job))
    return out
  }

  #ours(): SlurmRecord[] {
    return this.#records.all().filter((r) => r.labels[LABEL_POOL] === this.#ctx.poolId)
  }

  /** The newest live job of that name run by the record's account (ids grow): never someone else's job. */
  #findByName(snap: Snapshot, jobName: string, user: string): SlurmJob | undefined {
    let best: SlurmJob | undefined
    for (const j of snap.jobs.values())
      if (
        j.name === jobName &&
        j.user === user &&
        !TERMINAL_STATES.has(j.state) &&
        (!best || Number(j.id) > Number(best.id))
      )
        best = j
    return best
  }

  #fromRecord(rec: SlurmRecord, snap: Snapshot): ProviderInstance {
    const jobId = rec.jobId!
    const base = {
      ref: jobId,
      instanceId: rec.labels[LABEL_INSTANCE] ?? rec.instanceId,
      template: rec.template,
      labels: rec.labels,
      createdAt: rec.submittedAt,
    }
    if (rec.destroyed) return { ...base, state: 'terminated', address: null, message: 'cancelled' }
    const job = snap.jobs.get(jobId)
    if (!job) {
      // Submitted after this answer was taken: not missing, just new.
      if (snap.at <= rec.submittedAt)
        return {
          ...base,
          state: rec.lastState ?? 'pending',
          address: rec.lastAddress ?? null,
          message: `Slurm job ${jobId} submitted`,
        }
      const since = this.#missingSince.get(jobId) ?? snap.at
      this.#missingSince.set(jobId, since)
      if (snap.at - since < this.#s.lostGraceMs)
        return {
          ...base,
          state: rec.lastState ?? 'pending',
          address: rec.lastAddress ?? null,
          message: `Slurm does not show job ${jobId} right now; keeping its last state`,
        }
      return { ...base, state: 'terminated', address: null, message: `Slurm no longer knows job ${jobId}` }
    }
    this.#missingSince.delete(jobId)
    const seen = { ...this.#fromJob(job), ...base }
    // A comment's `addr=` (the fallback when the job cannot reach the callback): checked as acceptAddress checks.
    const ok =
      this.#s.addressFromComment && commentAddressOk(this.#nodes.cached(job.nodes), rec.portRange, seen.address)
    const inst = { ...seen, address: ok ? seen.address : null }
    if (inst.state !== 'terminated' && (inst.state !== rec.lastState || inst.address !== (rec.lastAddress ?? null))) {
      rec.lastState = inst.state
      rec.lastAddress = inst.address
      try {
        this.#records.write(rec)
      } catch {
        // best effort: the last state only bridges an outage
      }
    }
    return inst
  }

  /**
   * A job with this pool's name that no record of ours names: anyone on the cluster can submit a
   * job under any name and comment, so it is never attributed to an instance (no instanceId): the
   * pool sees an orphan and reaps it after its grace.
   */
  #unrecorded(job: SlurmJob): ProviderInstance {
    const inst = this.#fromJob(job)
    return { ...inst, instanceId: '', address: null, message: `Slurm job ${job.id} has this pool's name but no record` }
  }

  /**
   * Vouches for the address a job's wrapper reported through the callback (docs/security.md): the
   * job ours and running, the port within the template's range, the host the job's node.
   */
  async acceptAddress(ref: string, host: string, port: number, opts: AcceptAddressOptions): Promise<string | null> {
    const s = parseSlurmTemplateSettings(opts.template.settings, opts.template.maxLifetimeMs).settings
    if (!s || !JOB_ID_RE.test(ref) || !this.#ours().some((r) => r.jobId === ref && !r.destroyed)) return null
    const job = async (fresh: boolean) => (await this.#query(fresh ? 0 : this.#maxAge())).jobs.get(ref)
    return vouchForAddress({ job, nodes: this.#nodes, host, port, range: [s.portFirst, s.portLast], log: opts.log })
  }

  #fromJob(job: SlurmJob): ProviderInstance {
    return jobToInstance(job, this.#prefix, this.#ctx.poolId)
  }

  // --- changing the scheduler ----------------------------------------------------------------

  async create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance> {
    if (!isInstanceId(spec.id)) throw new ProviderError(NAME, `invalid instance id "${String(spec.id).slice(0, 40)}"`)
    const parsed = parseSlurmTemplateSettings(spec.template.settings, spec.template.maxLifetimeMs)
    if (!parsed.settings)
      throw new ProviderError(NAME, `template "${spec.template.name}": ${parsed.problems.join('; ')}`)
    const settings = parsed.settings
    return this.#locks.run(spec.id, async () => {
      opts.signal?.throwIfAborted()
      const rec = this.#records.read(spec.id)
      if (rec && !rec.destroyed) {
        // A job id recorded, or a submission whose answer was lost (look it up by name, fresh).
        const snap = await this.#query(rec.jobId ? this.#maxAge() : 0)
        if (!rec.jobId) {
          const job = this.#findByName(snap, rec.jobName, rec.user)
          if (job) {
            rec.jobId = job.id
            this.#records.write(rec)
            opts.log.info({ instanceId: spec.id, jobId: job.id }, 'slurm: adopted the job of an interrupted submission')
          }
        }
        if (rec.jobId) {
          const inst = this.#fromRecord(rec, snap)
          if (inst.state !== 'terminated') return inst
        }
      }
      return this.#submit(spec, settings, opts.log)
    })
  }

  async #submit(spec: InstanceSpec, s: SlurmTemplateSettings, log: Logger): Promise<ProviderInstance> {
    const user = accountOf(spec, s)
    const labels = {
      ...spec.labels,
      [LABEL_POOL]: spec.poolId,
      [LABEL_INSTANCE]: spec.id,
      [LABEL_TEMPLATE]: spec.template.name,
    }
    const comment = COMMENT_PREFIX + Buffer.from(JSON.stringify(labels)).toString('base64url')
    const jobName = `${this.#prefix}${spec.id}`
    const workdir = substitutePath(s.workdir, spec, user)
    const args = [
      '--parsable',
      `--job-name=${jobName}`,
      `--comment=${comment}`,
      '--export=NONE',
      '--nodes=1',
      '--ntasks=1',
      `--chdir=${workdir}`,
      `--output=${substitutePath(s.output, spec, user)}`,
      ...(s.partition ? [`--partition=${s.partition}`] : []),
      ...(s.account ? [`--account=${s.account}`] : []),
      ...(s.qos ? [`--qos=${s.qos}`] : []),
      ...(s.timeMinutes ? [`--time=${s.timeMinutes}`] : []),
      ...(s.cpus ? [`--cpus-per-task=${s.cpus}`] : []),
      ...(s.memory ? [`--mem=${s.memory}`] : []),
      ...(s.gres ? [`--gres=${s.gres}`] : []),
      ...(s.constraint ? [`--constraint=${s.constraint}`] : []),
      ...s.extraArgs,
    ]
    let prefix: string[] = []
    if (this.#s.runAs === 'uid') args.unshift(`--uid=${user}`, `--gid=${await gidOf(this.cli, this.#gids, user)}`)
    else if (this.#s.runAs === 'prefix') prefix = this.#s.submitPrefix.map((a) => a.replaceAll('{{user}}', user))
    const rec: SlurmRecord = {
      version: 1,
      instanceId: spec.id,
      template: spec.template.name,
      jobName,
      jobId: null,
      labels,
      user,
      submittedAt: Date.now(),
      portRange: [s.portFirst, s.portLast],
    }
    this.#records.write(rec) // before sbatch: a crash after it is adopted by name, not submitted twice
    this.#invalidate()
    const r = await this.cli.run('sbatch', args, { stdin: jobScript(spec, s, comment, workdir), prefix })
    const jobId = r.stdout.trim().split(';')[0] ?? ''
    if (r.code !== 0 || !JOB_ID_RE.test(jobId)) {
      const why = firstLine(r.stderr) || `exit code ${r.code}`
      // Nothing was queued: the record goes (a controller that timed out may have queued it: then
      // the record stays and the job is found by name).
      const unreachable = /unable to contact|connection refused|timed out|socket|Zero Bytes/i.test(why)
      if (!unreachable) this.#records.remove(spec.id)
      throw new ProviderError(NAME, `sbatch refused the job: ${why}`, { retryable: unreachable })
    }
    rec.jobId = jobId
    rec.lastState = 'pending'
    this.#records.write(rec)
    log.info({ instanceId: spec.id, jobId, user }, 'slurm: job submitted')
    return {
      ref: jobId,
      instanceId: spec.id,
      template: spec.template.name,
      state: 'pending',
      address: null,
      labels,
      createdAt: rec.submittedAt,
      progress: 10,
      message: `Slurm job ${jobId} submitted`,
    }
  }

  async destroy(ref: string, opts: OperationOptions): Promise<void> {
    if (!JOB_ID_RE.test(ref)) return
    const rec = this.#ours().find((r) => r.jobId === ref)
    const run = async (): Promise<void> => {
      const r = await this.cli.run('scancel', [ref])
      this.#invalidate()
      // An unknown (long gone) job is destroyed already.
      if (r.code !== 0 && !/invalid job id|already completing or completed/i.test(r.stderr))
        throw new ProviderError(NAME, `scancel ${ref} failed: ${firstLine(r.stderr) || `exit code ${r.code}`}`, {
          retryable: true,
        })
      if (rec) {
        const cur = this.#records.read(rec.instanceId)
        if (cur && cur.jobId === ref) {
          cur.destroyed = true
          this.#records.write(cur)
        }
      }
      opts.log.info({ jobId: ref }, 'slurm: job cancelled')
    }
    // Only jobs of this pool: a ref is never a licence to cancel someone else's job.
    if (rec) return this.#locks.run(rec.instanceId, run)
    const snap = await this.#query(0)
    if (snap.jobs.has(ref)) await run()
  }

  async stop(ref: string, _opts: OperationOptions): Promise<void> {
    await this.#pause(ref, true)
  }

  async start(ref: string, _opts: OperationOptions): Promise<void> {
    await this.#pause(ref, false)
  }

  /** Suspend (running) or hold (pending); resume or release. Only where the cluster allows it. */
  async #pause(ref: string, stop: boolean): Promise<void> {
    if (!this.#s.suspend)
      throw new ProviderError(NAME, 'suspend is not enabled on this cluster (providers.slurm.suspend)')
    const rec = this.#ours().find((r) => r.jobId === ref)
    if (!rec) throw new ProviderError(NAME, `job ${ref} is not one of this pool's`)
    await this.#locks.run(rec.instanceId, async () => {
      const cur = this.#records.read(rec.instanceId)
      if (!cur || cur.jobId !== ref) return
      const job = (await this.#query(0)).jobs.get(ref)
      if (!job) throw new ProviderError(NAME, `Slurm does not show job ${ref}`, { retryable: true })
      let how: 'hold' | 'suspend' | undefined
      if (stop) how = job.state === 'PENDING' ? 'hold' : 'suspend'
      const verb = stop ? how! : cur.paused === 'hold' || job.state === 'PENDING' ? 'release' : 'resume'
      const r = await this.cli.run('scontrol', [verb, ref])
      this.#invalidate()
      if (r.code !== 0)
        throw new ProviderError(NAME, `scontrol ${verb} ${ref} failed: ${firstLine(r.stderr) || `exit code ${r.code}`}`)
      cur.paused = how
      this.#records.write(cur)
    })
  }

  async relabel(ref: string, labels: Readonly<Record<string, string>>, _opts: OperationOptions): Promise<void> {
    const rec = this.#ours().find((r) => r.jobId === ref)
    if (!rec) return
    await this.#locks.run(rec.instanceId, async () => {
      const cur = this.#records.read(rec.instanceId)
      if (!cur || cur.jobId !== ref) return
      cur.labels = { ...cur.labels, ...labels }
      this.#records.write(cur)
    })
  }

  async close(): Promise<void> {
    // Jobs keep running: a restarted server finds them again from its records and squeue.
  }
}
