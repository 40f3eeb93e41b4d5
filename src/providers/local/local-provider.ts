import type { ChildProcess } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdirSync, rmSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import type { Logger } from 'pino'
import type { TemplateConfig } from '../../config/types.js'
import { ProviderError } from '../../domain/errors.js'
import { isInstanceId } from '../../domain/ids.js'
import { KeyedSerializer } from '../keyed-serializer.js'
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
import { localScope, planIsolation, wrapCommand, type IsolationPlan } from './local-isolation.js'
import type { SessionSlot } from './local-network.js'
import {
  parseLocalProviderSettings,
  parseLocalTemplateSettings,
  type LocalProviderSettings,
  type LocalTemplateSettings,
} from './local-provider-config.js'
import { HAS_PROC, findExecutable, findMarked, killGroup, readProcStat } from './local-proc.js'
import {
  LOG_FILE,
  NAME,
  RECORD_FILE,
  REF_RE,
  RecordFiles,
  fileLock,
  refOf,
  type LocalInstanceRecord,
} from './local-record.js'
import { SessionSlots } from './local-slots.js'
import {
  HOST,
  NETNS_PORT,
  PortPicker,
  sessionEnv,
  sessionProgram,
  sessionTokens,
  spawnDetached,
  type SessionPlace,
} from './local-spawn.js'
import { substitute } from '../session-env.js'
import { isAlive, stopRecordedGroup, terminateGroup } from './local-stop.js'

export { refOf, type LocalInstanceRecord } from './local-record.js'

/**
 * Runs each instance as a process group on a free loopback port, in `<dataDir>/instances/<id>/`,
 * with stdout and stderr appended to `output.log` there. Instances outlive the server: the
 * record file plus the process start time let a later server find (and kill) them again.
 *
 * Decision: `destroy` keeps the instance directory (its output.log is what an operator reads
 * when a session misbehaved) and marks the record `terminated`; `list()` removes such
 * directories `keepTerminated` (provider setting, default 24 h) after they ended.
 */
export class LocalProvider implements Provider {
  readonly name = NAME
  readonly capabilities: ProviderCapabilities = { supportsSuspend: false }
  readonly #ctx: ProviderContext
  readonly #settings: LocalProviderSettings
  readonly #records: RecordFiles
  /** Per-instanceId serialization of create/destroy within this server. */
  readonly #locks = new KeyedSerializer()
  readonly #ports = new PortPicker()
  /** Where session homes live (outside the data directory). */
  readonly #sessionsDir: string
  readonly #slots: SessionSlots
  /** `localScope(poolId, dataDir)`: names, slot claims and the marker every session process carries. */
  readonly scope: string
  #plan: IsolationPlan | null = null

  constructor(ctx: ProviderContext) {
    this.#ctx = ctx
    this.#settings = parseLocalProviderSettings(ctx.settings)
    const data = resolve(ctx.dataDir)
    this.#records = new RecordFiles(join(data, 'instances'))
    this.#sessionsDir = this.#settings.sessionsDir
      ? resolve(this.#settings.sessionsDir)
      : join(dirname(data), `${basename(data)}-sessions`)
    this.scope = localScope(ctx.poolId, data)
    this.#slots = new SessionSlots(this.#settings.isolation, this.scope, (holder) => this.#slotIsStale(holder))
  }

  /** Working directory (and HOME) of one instance: `<sessionsDir>/<id>`, owned by the session's account, 0700. */
  workdir(instanceId: string): string {
    if (!isInstanceId(instanceId))
      throw new ProviderError(NAME, `invalid instance id "${String(instanceId).slice(0, 40)}"`)
    return join(this.#sessionsDir, instanceId)
  }

  async init(opts: OperationOptions): Promise<void> {
    const root = this.#records.root
    mkdirSync(root, { recursive: true, mode: 0o700 })
    chmodSync(root, 0o700)
    // Sessions may pass through (to their own home) but not list who else has one.
    mkdirSync(this.#sessionsDir, { recursive: true, mode: 0o711 })
    chmodSync(this.#sessionsDir, 0o711)
    if (!HAS_PROC) opts.log.warn('local provider: no /proc; a reused pid cannot be told from the process we started')
    this.#plan = await planIsolation(this.#settings.isolation, this.scope, opts.log)
    if (this.#plan.kind !== 'none') {
      mkdirSync(this.#slots.dir, { recursive: true, mode: 0o700 })
      chmodSync(dirname(this.#slots.dir), 0o700)
    }
  }

  isolation(): IsolationReport {
    return this.#isolationPlan().report
  }

  #isolationPlan(): IsolationPlan {
    if (!this.#plan) throw new ProviderError(NAME, 'local provider used before init()')
    return this.#plan
  }

  validateTemplate(template: TemplateConfig): string[] {
    const parsed = parseLocalTemplateSettings(template.settings)
    if (!parsed.settings) return parsed.problems
    const program = parsed.settings.command[0]!
    if (program === 'node' || program.includes('{{')) return []
    if (!findExecutable(program, process.env.PATH, process.cwd())) {
      return [
        program.includes('/')
          ? `local.command[0]: "${program}" does not exist or is not executable`
          : `local.command[0]: program "${program}" was not found on PATH or is not executable`,
      ]
    }
    return []
  }

  async create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance> {
    const dir = this.#records.dir(spec.id)
    const parsed = parseLocalTemplateSettings(spec.template.settings)
    if (!parsed.settings)
      throw new ProviderError(NAME, `template "${spec.template.name}": ${parsed.problems.join('; ')}`)
    const settings = parsed.settings
    return this.#locked(spec.id, async () => {
      opts.signal?.throwIfAborted()
      mkdirSync(dir, { recursive: true })
      const release = await fileLock(this.#records.lockFile(spec.id), opts.signal)
      try {
        const existing = this.#records.read(spec.id)
        if (existing && existing.state === 'running') {
          if (isAlive(existing, this.scope)) return this.#toInstance(existing)
          // The previous process died (or the machine rebooted): clear what is left of its group first.
          await this.#terminate(existing, 0, opts.log)
        }
        // A server killed between spawn() and writing the record leaves a process no record names:
        // find it by the marker it carries in its environment and end it before starting another.
        for (const { pid } of findMarked(this.scope, spec.id)) {
          if (existing && existing.state === 'running' && existing.pid === pid) continue
          opts.log.warn(
            { instanceId: spec.id, pid },
            'local: ending a process of this instance that has no record (server died mid-spawn)',
          )
          await terminateGroup(spec.id, pid, 0, opts.log)
        }
        return await this.#spawn(spec, settings, dir, opts.log)
      } finally {
        release()
      }
    })
  }

  async describe(refs: readonly string[], _opts: OperationOptions): Promise<Map<string, ProviderInstance>> {
    const wanted = new Set(refs)
    const out = new Map<string, ProviderInstance>()
    if (wanted.size === 0) return out
    for (const rec of this.#records.all(this.#ctx.poolId)) {
      const ref = refOf(rec)
      if (wanted.has(ref)) out.set(ref, this.#toInstance(rec))
    }
    return out
  }

  async list(opts: OperationOptions): Promise<ProviderInstance[]> {
    const now = Date.now()
    const out: ProviderInstance[] = []
    for (const rec of this.#records.all(this.#ctx.poolId)) {
      if (
        rec.state === 'terminated' &&
        rec.terminatedAt !== undefined &&
        now - rec.terminatedAt > this.#settings.keepTerminatedMs
      ) {
        this.#prune(rec, opts.log)
        continue
      }
      out.push(this.#toInstance(rec))
    }
    await this.sweep(opts)
    // Processes no running record names (the server died between spawn and record): listed, so
    // that the pool reaps them as orphans; nothing of ours runs unseen.
    const known = new Set(out.filter((i) => i.state === 'running').map((i) => i.ref))
    for (const m of findMarked(this.scope)) {
      const ref = refOf(m)
      if (known.has(ref) || this.#locks.has(m.instanceId)) continue
      out.push({
        ref,
        instanceId: m.instanceId,
        template: m.template,
        state: 'running',
        address: null,
        labels: { [LABEL_POOL]: this.#ctx.poolId, [LABEL_INSTANCE]: m.instanceId, [LABEL_TEMPLATE]: m.template },
        createdAt: null,
        message: 'a session process without its record',
      })
    }
    return out
  }

  /** Removes the directory (and home) of an instance that ended more than `keepTerminated` ago. */
  #prune(rec: LocalInstanceRecord, log: Logger): void {
    // Not while a create of the same id is under way (it would lose the new process's record).
    if (this.#createUnderWay(rec.instanceId)) return
    try {
      rmSync(join(this.#records.root, rec.instanceId), { recursive: true, force: true })
      if (rec.home) rmSync(rec.home, { recursive: true, force: true })
      log.debug({ instanceId: rec.instanceId }, 'local: removed old instance directory')
    } catch (err) {
      log.warn({ instanceId: rec.instanceId, err }, 'local: cannot remove old instance directory')
    }
  }

  async destroy(ref: string, opts: OperationOptions): Promise<void> {
    if (!REF_RE.test(ref)) return
    const found = this.#records.all(this.#ctx.poolId).find((r) => refOf(r) === ref)
    if (!found) {
      // Not recorded: signalled only if it carries this pool's marker (a process that lost its record).
      const m = findMarked(this.scope).find((p) => refOf(p) === ref)
      if (m) await this.#locked(m.instanceId, () => terminateGroup(m.instanceId, m.pid, 0, opts.log))
      return
    }
    await this.#locked(found.instanceId, async () => {
      const rec = this.#records.read(found.instanceId)
      if (!rec || refOf(rec) !== ref) return // replaced meanwhile by a newer process: not this ref's business
      await this.#terminate(rec, rec.stopGraceMs, opts.log)
      if (rec.state !== 'terminated') {
        rec.state = 'terminated'
        rec.terminatedAt = Date.now()
        this.#records.write(rec)
      }
    })
  }

  /**
   * Merges labels into the record (the owner on a claim; on a hand-over, the queued instance that
   * now holds this process). The record stays where it is and the process keeps its marker: both
   * name the instance that started it.
   */
  async relabel(ref: string, labels: Readonly<Record<string, string>>, _opts: OperationOptions): Promise<void> {
    if (!REF_RE.test(ref)) return
    const found = this.#records.all(this.#ctx.poolId).find((r) => refOf(r) === ref)
    if (!found) return
    await this.#locked(found.instanceId, async () => {
      const rec = this.#records.read(found.instanceId)
      if (!rec || refOf(rec) !== ref) return
      this.#records.write({ ...rec, labels: { ...rec.labels, ...labels } })
    })
  }

  async close(): Promise<void> {
    // Processes are deliberately left running: a restarted server finds them with list().
  }

  /**
   * Removes the namespaces of this pool that no live session holds, with their slot claims: what
   * sessions whose processes were killed behind the provider's back (and nobody destroyed), or a
   * create that died half-way, left. `list()` calls it; so may a test or an operator's tool.
   */
  async sweep(opts: OperationOptions): Promise<void> {
    if (this.#plan) await this.#slots.sweep(this.#plan, opts.log)
  }

  // --- internals -------------------------------------------------------------------------

  /** Claims a slot, sets up its network, prepares the home, spawns, and writes the record. */
  async #spawn(
    spec: InstanceSpec,
    settings: LocalTemplateSettings,
    dir: string,
    log: Logger,
  ): Promise<ProviderInstance> {
    const plan = this.#isolationPlan()
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const slot = await this.#slots.claim(plan, spec.id)
    const at: SessionPlace = {
      host: plan.kind === 'netns' && slot ? slot.sessionIp : HOST,
      port: plan.kind === 'netns' ? NETNS_PORT : await this.#ports.next(),
      home: this.workdir(spec.id),
      slot,
    }
    rmSync(at.home, { recursive: true, force: true }) // a leftover of a crashed start: never hand it to a new account
    mkdirSync(at.home, { recursive: true, mode: 0o700 })
    if (slot) chownSync(at.home, slot.uid, slot.uid)
    const tokens = sessionTokens(spec, at)
    const argv = settings.command.map((a) => substitute(a, tokens))
    let program: string
    try {
      program = sessionProgram(argv[0]!, slot !== null)
    } catch (err) {
      await this.#releaseIsolation(spec.id, slot, at.home)
      throw err
    }
    const env = sessionEnv(spec, settings, at, this.scope, tokens)
    const [bin, args] = wrapCommand(plan, slot, program, argv.slice(1))
    const started = await spawnDetached(bin, args, {
      cwd: at.home,
      env,
      logPath: join(dir, LOG_FILE),
      header: `starting ${JSON.stringify(argv[0])} on ${at.host}:${at.port}${slot ? ` as uid ${slot.uid}` : ''}`,
    })
    if ('error' in started) {
      await this.#releaseIsolation(spec.id, slot, at.home)
      const err = started.error
      throw new ProviderError(
        NAME,
        `cannot start "${argv[0]}": ${(err as NodeJS.ErrnoException).code ?? err.message}`,
        { cause: err },
      )
    }
    // Everything from here to the record is synchronous. Should the server die in between anyway,
    // the process carries STUDIOPOOL_SCOPE and STUDIOPOOL_INSTANCE_ID: list() and create() find it by them.
    const rec = this.#recordStarted(spec, settings, at, argv, started.pid)
    this.#watch(started.child, spec.id, started.pid, log)
    log.info({ instanceId: spec.id, pid: started.pid, address: rec.address, uid: slot?.uid }, 'local: process started')
    return this.#toInstance(rec)
  }

  /** Writes the record of a process just started; without it nobody could find the process again, so it is killed. */
  #recordStarted(
    spec: InstanceSpec,
    settings: LocalTemplateSettings,
    at: SessionPlace,
    argv: readonly string[],
    pid: number,
  ): LocalInstanceRecord {
    const stat = readProcStat(pid)
    const rec: LocalInstanceRecord = {
      version: 1,
      instanceId: spec.id,
      template: spec.template.name,
      pid,
      pgid: pid, // detached: the child called setsid(), so it leads its own group
      startTime: stat?.startTime ?? '',
      port: at.port,
      address: `http://${at.host}:${at.port}`,
      labels: {
        ...spec.labels,
        [LABEL_POOL]: spec.poolId,
        [LABEL_INSTANCE]: spec.id,
        [LABEL_TEMPLATE]: spec.template.name,
      },
      command: argv.map((a) =>
        spec.appToken && a.includes(spec.appToken) ? a.replaceAll(spec.appToken, '[app token]') : a,
      ),
      stopGraceMs: settings.stopGraceMs,
      createdAt: Date.now(),
      home: at.home,
      ...(at.slot ? { slot: at.slot.slot, uid: at.slot.uid } : {}),
      state: 'running',
    }
    try {
      this.#records.write(rec)
    } catch (err) {
      killGroup(pid, 'SIGKILL')
      throw new ProviderError(NAME, `cannot write ${RECORD_FILE} for ${spec.id}: ${(err as Error).message}`, {
        cause: err,
        retryable: true,
      })
    }
    return rec
  }

  /** Notes how a child of this server ends; the server does not wait for it. */
  #watch(child: ChildProcess, instanceId: string, pid: number, log: Logger): void {
    child.on('error', (err) => log.warn({ instanceId, err: err.message }, 'local: process error'))
    child.once('exit', (code, signal) => this.#noteExit(instanceId, pid, code, signal))
    child.unref()
  }

  /** A create of this instance under way, in this process or another sharing the data directory. */
  #createUnderWay(instanceId: string): boolean {
    return this.#locks.has(instanceId) || existsSync(this.#records.lockFile(instanceId))
  }

  /** A slot is stale when its holder has no running record and no create under way. */
  #slotIsStale(holder: string): boolean {
    if (!isInstanceId(holder)) return true
    if (this.#createUnderWay(holder)) return false
    const rec = this.#records.read(holder)
    return !rec || rec.state === 'terminated' || !isAlive(rec, this.scope)
  }

  /** Gives back what an instance held besides its processes: namespace, slot, home. Idempotent. */
  async #releaseIsolation(instanceId: string, slot: SessionSlot | null, home: string | undefined): Promise<void> {
    if (slot) await this.#slots.release(this.#isolationPlan(), instanceId, slot)
    // A session's files go with it (its account is reused by a later session); see docs/security.md.
    if (home && slot) rmSync(home, { recursive: true, force: true })
  }

  #slotOfRecord(rec: LocalInstanceRecord): SessionSlot | null {
    return rec.slot === undefined ? null : this.#slots.of(rec.slot)
  }

  /** Records how a child of this server ended, for the failure message (only while it is still the current process). */
  #noteExit(instanceId: string, pid: number, code: number | null, signal: string | null): void {
    try {
      const rec = this.#records.read(instanceId)
      if (!rec || rec.pid !== pid || rec.exitCode !== undefined) return
      rec.exitCode = code
      rec.exitSignal = signal
      this.#records.write(rec)
    } catch {
      // best effort
    }
  }

  /** Ends a record's process group (only if it is still this instance's) and gives back its namespace, slot and (isolated) home. */
  async #terminate(rec: LocalInstanceRecord, graceMs: number, log: Logger): Promise<void> {
    await stopRecordedGroup(rec, this.scope, graceMs, log)
    await this.#releaseIsolation(rec.instanceId, this.#slotOfRecord(rec), rec.home)
  }

  #toInstance(rec: LocalInstanceRecord): ProviderInstance {
    const alive = rec.state === 'running' && isAlive(rec, this.scope)
    let message: string | undefined
    if (!alive && rec.state === 'running') {
      const how =
        rec.exitCode !== undefined
          ? rec.exitSignal
            ? `was killed by ${rec.exitSignal}`
            : `exited with code ${rec.exitCode}`
          : 'is gone'
      const tail = this.#records.lastLogLine(rec.instanceId)
      message = `the process ${how}${tail ? `: ${tail}` : ''}`
    }
    return {
      ref: refOf(rec),
      // After a hand-over the label names the instance that holds the process now.
      instanceId: rec.labels[LABEL_INSTANCE] ?? rec.instanceId,
      template: rec.template,
      state: alive ? 'running' : 'terminated',
      address: alive ? rec.address : null,
      labels: rec.labels,
      createdAt: rec.createdAt,
      ...(message ? { message } : {}),
    }
  }

  #locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.#locks.run(key, fn)
  }
}
