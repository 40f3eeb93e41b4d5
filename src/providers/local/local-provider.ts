import { spawn } from 'node:child_process'
import { KeyedSerializer } from '../keyed-serializer.js'
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { createServer } from 'node:net'
import { basename, dirname, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { TemplateConfig } from '../../config/types.js'
import { ProviderError } from '../../domain/errors.js'
import { isInstanceId } from '../../domain/ids.js'
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
  type IsolationReport,
} from '../provider.js'
import {
  claimSlot,
  namespacesOf,
  planIsolation,
  slotHolder,
  SLOTS_DIR,
  localScope,
  releaseSlot,
  setupSessionNetwork,
  slotCount,
  slotOf,
  teardownSessionNetwork,
  wrapCommand,
  type IsolationPlan,
  type SessionSlot,
} from './local-isolation.js'
import {
  parseLocalProviderSettings,
  parseLocalTemplateSettings,
  type LocalProviderSettings,
  type LocalTemplateSettings,
} from './local-provider-config.js'
import {
  HAS_PROC,
  findExecutable,
  markerOf,
  findMarked,
  groupMembers,
  isRunningState,
  killGroup,
  readProcStat,
} from './local-proc.js'

const NAME = 'local'
const HOST = '127.0.0.1'
const RECORD_FILE = 'instance.json'
const LOG_FILE = 'output.log'
const LOCK_FILE = 'create.lock'
/** How long a create waits for another server process that holds the same instance's lock. */
const LOCK_WAIT_MS = 15_000
const REF_RE = /^(\d{1,10}):(\d{0,20})$/
/** Variables of the server's environment a session process inherits; nothing else (no keys, no secrets). */
const PASS_ENV = ['PATH', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'LC_MESSAGES', 'TZ', 'TERM']
/** Inside a network namespace every port is free: the app always gets this one (no port race). */
const NETNS_PORT = 8888
/** After SIGKILL the kernel needs a moment to tear the group down. */
const KILL_WAIT_MS = 3000
const POLL_MS = 25

/** `<dataDir>/instances/<id>/instance.json`: everything needed to find the process again after a restart. */
export interface LocalInstanceRecord {
  readonly version: 1
  readonly instanceId: string
  readonly template: string
  readonly pid: number
  readonly pgid: number
  /** `/proc/<pid>/stat` field 22; '' where there is no /proc. */
  readonly startTime: string
  readonly port: number
  readonly address: string
  readonly labels: Readonly<Record<string, string>>
  readonly command: readonly string[]
  readonly stopGraceMs: number
  readonly createdAt: number
  /** The session's working directory (its HOME), outside the data directory. */
  readonly home?: string
  /** Isolation slot: uid, namespace and veth (absent when sessions are not isolated). */
  readonly slot?: number
  readonly uid?: number
  state: 'running' | 'terminated'
  terminatedAt?: number
  exitCode?: number | null
  exitSignal?: string | null
}

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
  readonly #root: string
  /** Per-instanceId serialization of create/destroy within this server. */
  readonly #locks = new KeyedSerializer()
  /** Ports handed out recently, so that two creates in a row never get the same one before either binds. */
  readonly #recentPorts = new Map<number, number>()
  /** Where session homes live (outside the data directory) and where slot claims are kept. */
  readonly #sessionsDir: string
  readonly #slotsDir: string
  /** `localScope(poolId, dataDir)`: names, slot claims and the marker every session process carries. */
  readonly scope: string
  readonly #tag: string
  #plan: IsolationPlan | null = null

  constructor(ctx: ProviderContext) {
    this.#ctx = ctx
    this.#settings = parseLocalProviderSettings(ctx.settings)
    const data = resolve(ctx.dataDir)
    this.#root = join(data, 'instances')
    this.#slotsDir = SLOTS_DIR
    this.#sessionsDir = this.#settings.sessionsDir
      ? resolve(this.#settings.sessionsDir)
      : join(dirname(data), `${basename(data)}-sessions`)
    this.scope = localScope(ctx.poolId, data)
    this.#tag = this.scope
  }

  /** Bookkeeping of one instance (record, output.log, lock): inside the data directory, never readable by sessions. */
  #dir(instanceId: string): string {
    if (!isInstanceId(instanceId))
      throw new ProviderError(NAME, `invalid instance id "${String(instanceId).slice(0, 40)}"`)
    return join(this.#root, instanceId)
  }

  /** Working directory (and HOME) of one instance: `<sessionsDir>/<id>`, owned by the session's account, 0700. */
  workdir(instanceId: string): string {
    if (!isInstanceId(instanceId))
      throw new ProviderError(NAME, `invalid instance id "${String(instanceId).slice(0, 40)}"`)
    return join(this.#sessionsDir, instanceId)
  }

  async init(opts: OperationOptions): Promise<void> {
    mkdirSync(this.#root, { recursive: true, mode: 0o700 })
    chmodSync(this.#root, 0o700)
    // Sessions may pass through (to their own home) but not list who else has one.
    mkdirSync(this.#sessionsDir, { recursive: true, mode: 0o711 })
    chmodSync(this.#sessionsDir, 0o711)
    if (!HAS_PROC) opts.log.warn('local provider: no /proc; a reused pid cannot be told from the process we started')
    this.#plan = await planIsolation(this.#settings.isolation, this.#tag, opts.log)
    if (this.#plan.kind !== 'none') {
      mkdirSync(this.#slotsDir, { recursive: true, mode: 0o700 })
      chmodSync(dirname(this.#slotsDir), 0o700)
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
          ? `settings.command[0]: "${program}" does not exist or is not executable`
          : `settings.command[0]: program "${program}" was not found on PATH or is not executable`,
      ]
    }
    return []
  }

  async create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance> {
    const dir = this.#dir(spec.id)
    const parsed = parseLocalTemplateSettings(spec.template.settings)
    if (!parsed.settings)
      throw new ProviderError(NAME, `template "${spec.template.name}": ${parsed.problems.join('; ')}`)
    const settings = parsed.settings
    return this.#locked(spec.id, async () => {
      opts.signal?.throwIfAborted()
      mkdirSync(dir, { recursive: true })
      const release = await fileLock(join(dir, LOCK_FILE), opts.signal)
      try {
        const existing = this.#readRecord(spec.id)
        if (existing && existing.state === 'running') {
          if (this.#isAlive(existing)) return this.#toInstance(existing)
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
          await this.#terminateGroup(spec.id, pid, 0, opts.log)
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
    for (const rec of this.#records()) {
      const ref = refOf(rec)
      if (wanted.has(ref)) out.set(ref, this.#toInstance(rec))
    }
    return out
  }

  async list(opts: OperationOptions): Promise<ProviderInstance[]> {
    const now = Date.now()
    const out: ProviderInstance[] = []
    for (const rec of this.#records()) {
      if (
        rec.state === 'terminated' &&
        rec.terminatedAt !== undefined &&
        now - rec.terminatedAt > this.#settings.keepTerminatedMs
      ) {
        // Not while a create of the same id is under way (it would lose the new process's record).
        if (this.#locks.has(rec.instanceId) || existsSync(join(this.#root, rec.instanceId, LOCK_FILE))) continue
        try {
          rmSync(join(this.#root, rec.instanceId), { recursive: true, force: true })
          if (rec.home) rmSync(rec.home, { recursive: true, force: true })
          opts.log.debug({ instanceId: rec.instanceId }, 'local: removed old instance directory')
        } catch (err) {
          opts.log.warn({ instanceId: rec.instanceId, err }, 'local: cannot remove old instance directory')
        }
        continue
      }
      out.push(this.#toInstance(rec))
    }
    await this.#sweepNamespaces(opts.log)
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

  async destroy(ref: string, opts: OperationOptions): Promise<void> {
    if (!REF_RE.test(ref)) return
    const found = this.#records().find((r) => refOf(r) === ref)
    if (!found) {
      // Not recorded: signalled only if it carries this pool's marker (a process that lost its record).
      const m = findMarked(this.scope).find((p) => refOf(p) === ref)
      if (m) await this.#locked(m.instanceId, () => this.#terminateGroup(m.instanceId, m.pid, 0, opts.log))
      return
    }
    await this.#locked(found.instanceId, async () => {
      const rec = this.#readRecord(found.instanceId)
      if (!rec || refOf(rec) !== ref) return // replaced meanwhile by a newer process: not this ref's business
      await this.#terminate(rec, rec.stopGraceMs, opts.log)
      if (rec.state !== 'terminated') {
        rec.state = 'terminated'
        rec.terminatedAt = Date.now()
        this.#writeRecord(rec)
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
    const found = this.#records().find((r) => refOf(r) === ref)
    if (!found) return
    await this.#locked(found.instanceId, async () => {
      const rec = this.#readRecord(found.instanceId)
      if (!rec || refOf(rec) !== ref) return
      this.#writeRecord({ ...rec, labels: { ...rec.labels, ...labels } })
    })
  }

  async close(): Promise<void> {
    // Processes are deliberately left running: a restarted server finds them with list().
  }

  // --- internals -------------------------------------------------------------------------

  async #spawn(
    spec: InstanceSpec,
    settings: LocalTemplateSettings,
    dir: string,
    log: Logger,
  ): Promise<ProviderInstance> {
    const plan = this.#isolationPlan()
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    let slot: SessionSlot | null = null
    if (plan.kind !== 'none') {
      let n: number
      try {
        n = claimSlot(
          this.#slotsDir,
          slotCount(this.#settings.isolation),
          {
            pool: this.scope,
            instanceId: spec.id,
            netnsOf: (k) => slotOf(this.#settings.isolation, this.#tag, k).netns,
          },
          (holder) => this.#slotIsStale(holder),
        )
      } catch (err) {
        throw new ProviderError(NAME, (err as Error).message, { cause: err, retryable: true })
      }
      slot = slotOf(this.#settings.isolation, this.#tag, n)
      if (plan.kind === 'netns') {
        try {
          await setupSessionNetwork(plan, slot)
        } catch (err) {
          releaseSlot(this.#slotsDir, n, this.scope, spec.id)
          throw new ProviderError(
            NAME,
            `cannot create the network namespace of ${spec.id}: ${(err as Error).message}`,
            { cause: err, retryable: true },
          )
        }
      }
    }
    const host = plan.kind === 'netns' && slot ? slot.sessionIp : HOST
    const port = plan.kind === 'netns' ? NETNS_PORT : await this.#freePort()
    const home = this.workdir(spec.id)
    rmSync(home, { recursive: true, force: true }) // a leftover of a crashed start: never hand it to a new account
    mkdirSync(home, { recursive: true, mode: 0o700 })
    if (slot) chownSync(home, slot.uid, slot.uid)
    const tokens: Record<string, string> = {
      port: String(port),
      basePath: spec.basePath,
      instanceId: spec.id,
      workdir: home,
      host,
      appToken: spec.appToken,
      user: spec.ownerId ?? '',
      sessionUrl: spec.sessionUrl,
    }
    const argv = settings.command.map((a) => substitute(a, tokens))
    let program = argv[0]!
    if (program === 'node') program = process.execPath
    else if (program.includes('/'))
      program = resolve(program) // relative to the server's cwd, not the workdir
    else if (slot) program = findExecutable(program, process.env.PATH, process.cwd()) ?? program
    // Checked here because, isolated, the spawned process is a wrapper that would start anyway.
    if (!findExecutable(program, process.env.PATH, process.cwd())) {
      await this.#releaseIsolation(spec.id, slot, home)
      throw new ProviderError(NAME, `cannot start "${argv[0]}": ENOENT (not found or not executable)`)
    }
    const env: Record<string, string> = {}
    for (const k of PASS_ENV) {
      const v = process.env[k]
      if (v !== undefined) env[k] = v
    }
    const account = slot ? `sp${slot.uid}` : (process.env.USER ?? process.env.LOGNAME ?? '')
    if (account) Object.assign(env, { USER: account, LOGNAME: account })
    // An isolated session never gets the server's HOME, whatever the template says.
    env.HOME = settings.home === 'inherit' && !slot && process.env.HOME ? process.env.HOME : home
    for (const [k, v] of Object.entries(settings.env)) env[k] = substitute(v, tokens)
    Object.assign(env, {
      PORT: String(port),
      HOST: host,
      BASE_PATH: spec.basePath,
      STUDIOPOOL_POOL: spec.poolId,
      STUDIOPOOL_SCOPE: this.scope,
      STUDIOPOOL_INSTANCE_ID: spec.id,
      STUDIOPOOL_TEMPLATE: spec.template.name,
      STUDIOPOOL_SESSION_URL: spec.sessionUrl,
      STUDIOPOOL_PROGRESS_URL: spec.progressUrl,
      STUDIOPOOL_PROGRESS_TOKEN: spec.progressToken,
    })
    // Known at create only for a cold start; a warm instance learns its user from X-Forwarded-User.
    if (spec.ownerId) env.STUDIOPOOL_USER = spec.ownerId
    const [bin, args] = wrapCommand(plan, slot, program, argv.slice(1))

    const logPath = join(dir, LOG_FILE)
    const fd = openSync(logPath, 'a', 0o600)
    let child
    try {
      writeSync(
        fd,
        `--- studiopool ${new Date().toISOString()}: starting ${JSON.stringify(argv[0])} on ${host}:${port}${slot ? ` as uid ${slot.uid}` : ''}\n`,
      )
      child = spawn(bin, args, { cwd: home, env, detached: true, stdio: ['ignore', fd, fd] })
    } finally {
      closeSync(fd)
    }
    const pid = child.pid
    if (pid === undefined) {
      const err = await new Promise<Error>((res) => {
        child.once('error', res)
        setTimeout(() => res(new Error('spawn failed')), 1000).unref()
      })
      await this.#releaseIsolation(spec.id, slot, home)
      throw new ProviderError(
        NAME,
        `cannot start "${argv[0]}": ${(err as NodeJS.ErrnoException).code ?? err.message}`,
        { cause: err },
      )
    }
    // Everything from here to writeRecord is synchronous. Should the server die in between anyway,
    // the process carries STUDIOPOOL_SCOPE and STUDIOPOOL_INSTANCE_ID: list() and create() find it by them.
    const stat = readProcStat(pid)
    const rec: LocalInstanceRecord = {
      version: 1,
      instanceId: spec.id,
      template: spec.template.name,
      pid,
      pgid: pid, // detached: the child called setsid(), so it leads its own group
      startTime: stat?.startTime ?? '',
      port,
      address: `http://${host}:${port}`,
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
      home,
      ...(slot ? { slot: slot.slot, uid: slot.uid } : {}),
      state: 'running',
    }
    try {
      this.#writeRecord(rec)
    } catch (err) {
      // Without its record nobody could find this process again: do not let it run.
      killGroup(pid, 'SIGKILL')
      throw new ProviderError(NAME, `cannot write ${RECORD_FILE} for ${spec.id}: ${(err as Error).message}`, {
        cause: err,
        retryable: true,
      })
    }
    child.on('error', (err) => log.warn({ instanceId: spec.id, err: err.message }, 'local: process error'))
    child.once('exit', (code, signal) => this.#noteExit(spec.id, pid, code, signal))
    child.unref()
    log.info({ instanceId: spec.id, pid, address: rec.address, uid: slot?.uid }, 'local: process started')
    return this.#toInstance(rec)
  }

  /**
   * Namespaces of this pool that no live session holds (its processes were killed behind our back
   * and nobody destroyed it, or a create died half-way): removed, with their slot claims.
   */
  async #sweepNamespaces(log: Logger): Promise<void> {
    const plan = this.#plan
    if (!plan || plan.kind !== 'netns') return
    for (const n of namespacesOf(this.#tag)) {
      const holder = slotHolder(this.#slotsDir, n, this.scope)
      if (holder && !this.#slotIsStale(holder)) continue
      const slot = slotOf(this.#settings.isolation, this.#tag, n)
      log.info({ netns: slot.netns, instanceId: holder }, 'local: removing a network namespace no live session holds')
      await teardownSessionNetwork(plan, slot)
      if (holder) releaseSlot(this.#slotsDir, n, this.scope, holder)
    }
  }

  /** A slot is stale when its holder has no running record and no create under way. */
  #slotIsStale(holder: string): boolean {
    if (!isInstanceId(holder)) return true
    // A create under way, in this process or another sharing the data directory.
    if (this.#locks.has(holder) || existsSync(join(this.#root, holder, LOCK_FILE))) return false
    const rec = this.#readRecord(holder)
    return !rec || rec.state === 'terminated' || !this.#isAlive(rec)
  }

  /** Gives back what an instance held besides its processes: namespace, slot, home. Idempotent. */
  async #releaseIsolation(instanceId: string, slot: SessionSlot | null, home: string | undefined): Promise<void> {
    const plan = this.#isolationPlan()
    // Only while the slot is still this instance's: an old record of a slot that was given back
    // and claimed by another session must never tear down that session's network.
    if (slot && slotHolder(this.#slotsDir, slot.slot, this.scope) === instanceId) {
      await teardownSessionNetwork(plan, slot)
      releaseSlot(this.#slotsDir, slot.slot, this.scope, instanceId)
    }
    // A session's files go with it (its account is reused by a later session); see docs/security.md.
    if (home && slot) rmSync(home, { recursive: true, force: true })
  }

  #slotOfRecord(rec: LocalInstanceRecord): SessionSlot | null {
    return rec.slot === undefined ? null : slotOf(this.#settings.isolation, this.#tag, rec.slot)
  }

  /** Records how a child of this server ended, for the failure message (only while it is still the current process). */
  #noteExit(instanceId: string, pid: number, code: number | null, signal: string | null): void {
    try {
      const rec = this.#readRecord(instanceId)
      if (!rec || rec.pid !== pid || rec.exitCode !== undefined) return
      rec.exitCode = code
      rec.exitSignal = signal
      this.#writeRecord(rec)
    } catch {
      // best effort
    }
  }

  /**
   * Ends a record's process group and gives back its namespace, slot and (isolated) home.
   * Only a process that carries this instance's marker is ever signalled: a record that names
   * another process (forged, or a reused pid) cannot make the server kill it.
   */
  async #terminate(rec: LocalInstanceRecord, graceMs: number, log: Logger): Promise<void> {
    const leader = readProcStat(rec.pid)
    // A live process with our pid but another start time means the pid was reused, which the kernel
    // only does once our group is gone entirely (the pgid holds the pid number): nothing to signal.
    const ours = !(leader && HAS_PROC && leader.startTime !== rec.startTime)
    if (ours && groupMembers(rec.pgid).length > 0) {
      if (leader && HAS_PROC && (await this.#settledMarker(rec)) !== 'yes') {
        log.warn(
          { instanceId: rec.instanceId, pid: rec.pid },
          "local: the record names a process that is not this instance's; not signalling it",
        )
      } else {
        await this.#terminateGroup(rec.instanceId, rec.pgid, graceMs, log)
      }
    }
    await this.#releaseIsolation(rec.instanceId, this.#slotOfRecord(rec), rec.home)
  }

  /** The marker once the leader's environment can be read (an exec in progress takes a moment); 'unknown' after half a second. */
  async #settledMarker(rec: LocalInstanceRecord): Promise<'yes' | 'no' | 'unknown'> {
    for (let i = 0; ; i++) {
      const m = markerOf(rec.pid, this.scope, rec.instanceId)
      if (m !== 'unknown' || i >= 20) return m
      await sleep(POLL_MS)
    }
  }

  /** SIGTERM to the group, up to `graceMs` for it to go, then SIGKILL. Resolves when the group is gone. */
  async #terminateGroup(instanceId: string, pgid: number, graceMs: number, log: Logger): Promise<void> {
    if (groupMembers(pgid).length === 0) return
    if (graceMs > 0) {
      killGroup(pgid, 'SIGTERM')
      const deadline = Date.now() + graceMs
      while (Date.now() < deadline) {
        if (groupMembers(pgid).length === 0) return
        await sleep(POLL_MS)
      }
      log.info({ instanceId, pgid, graceMs }, 'local: group did not stop after SIGTERM; sending SIGKILL')
    }
    killGroup(pgid, 'SIGKILL')
    const deadline = Date.now() + KILL_WAIT_MS
    while (Date.now() < deadline) {
      if (groupMembers(pgid).length === 0) return
      await sleep(POLL_MS)
    }
    throw new ProviderError(NAME, `process group ${pgid} of instance ${instanceId} survived SIGKILL`, {
      retryable: true,
    })
  }

  /** Running, with the start time recorded and this instance's marker: a forged record is never adopted. */
  #isAlive(rec: LocalInstanceRecord): boolean {
    const stat = readProcStat(rec.pid)
    // 'unknown' (an exec under way) counts as ours: pid and start time already match.
    return (
      isRunningState(stat) &&
      stat.startTime === rec.startTime &&
      (!HAS_PROC || markerOf(rec.pid, this.scope, rec.instanceId) !== 'no')
    )
  }

  #toInstance(rec: LocalInstanceRecord): ProviderInstance {
    const alive = rec.state === 'running' && this.#isAlive(rec)
    let message: string | undefined
    if (!alive && rec.state === 'running') {
      const how =
        rec.exitCode !== undefined
          ? rec.exitSignal
            ? `was killed by ${rec.exitSignal}`
            : `exited with code ${rec.exitCode}`
          : 'is gone'
      const tail = lastLine(join(this.#root, rec.instanceId, LOG_FILE))
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

  /** Every record of this pool under `<dataDir>/instances`. */
  #records(): LocalInstanceRecord[] {
    let names: string[]
    try {
      names = readdirSync(this.#root)
    } catch {
      return []
    }
    const out: LocalInstanceRecord[] = []
    for (const name of names) {
      if (!isInstanceId(name)) continue
      const rec = this.#readRecord(name)
      if (rec && rec.labels[LABEL_POOL] === this.#ctx.poolId) out.push(rec)
    }
    return out
  }

  #readRecord(instanceId: string): LocalInstanceRecord | null {
    try {
      const rec = JSON.parse(readFileSync(join(this.#root, instanceId, RECORD_FILE), 'utf8')) as LocalInstanceRecord
      if (
        rec.version !== 1 ||
        rec.instanceId !== instanceId ||
        !Number.isInteger(rec.pid) ||
        rec.pid <= 1 ||
        !Number.isInteger(rec.pgid) ||
        rec.pgid <= 1
      )
        return null
      return rec
    } catch {
      return null
    }
  }

  #writeRecord(rec: LocalInstanceRecord): void {
    const file = join(this.#root, rec.instanceId, RECORD_FILE)
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 })
    renameSync(tmp, file)
  }

  #locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.#locks.run(key, fn)
  }

  /** Binds port 0 on loopback, reads the port, closes; skips ports handed out in the last minute. */
  async #freePort(): Promise<number> {
    const now = Date.now()
    for (const [p, at] of this.#recentPorts) if (now - at > 60_000) this.#recentPorts.delete(p)
    for (let attempt = 0; attempt < 20; attempt++) {
      const port = await new Promise<number>((res, rej) => {
        const srv = createServer()
        srv.unref()
        srv.once('error', rej)
        srv.listen(0, HOST, () => {
          const addr = srv.address()
          const p = typeof addr === 'object' && addr ? addr.port : 0
          srv.close(() => res(p))
        })
      })
      if (port > 0 && !this.#recentPorts.has(port)) {
        this.#recentPorts.set(port, now)
        return port
      }
    }
    throw new ProviderError(NAME, 'no free port on 127.0.0.1', { retryable: true })
  }
}

/**
 * An exclusive lock file holding the owner's pid, so that two server processes on one machine
 * (split roles share the data directory) never start two processes for one instanceId. A lock
 * whose owner is gone is taken over.
 */
/** Lock files held by this process (several provider objects may share one data directory). */
const heldLocks = new Set<string>()

async function fileLock(path: string, signal: AbortSignal | undefined): Promise<() => void> {
  const deadline = Date.now() + LOCK_WAIT_MS
  for (;;) {
    try {
      const fd = openSync(path, 'wx', 0o600)
      writeSync(fd, `${process.pid}:${readProcStat(process.pid)?.startTime ?? ''}`)
      closeSync(fd)
      heldLocks.add(path)
      return () => {
        heldLocks.delete(path)
        rmSync(path, { force: true })
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    let owner: number
    let ownerStart: string
    try {
      const text = readFileSync(path, 'utf8')
      if (text === '' && Date.now() - statSync(path).mtimeMs < 2000) {
        await sleep(POLL_MS, undefined, { signal }) // its owner is writing it
        continue
      }
      const [pid, start] = text.split(':')
      owner = Number(pid)
      ownerStart = start ?? ''
    } catch {
      continue // released meanwhile
    }
    const stat = Number.isInteger(owner) && owner > 0 ? readProcStat(owner) : null
    const stale = owner === process.pid ? !heldLocks.has(path) : !isRunningState(stat) || stat.startTime !== ownerStart
    if (stale) {
      // Its owner died (or, for our own pid, no provider object of this process holds it): take it over.
      rmSync(path, { force: true })
      continue
    }
    if (Date.now() > deadline)
      throw new ProviderError(NAME, `instance directory ${path} is locked by process ${owner}`, { retryable: true })
    await sleep(POLL_MS, undefined, { signal })
  }
}

export function refOf(rec: Pick<LocalInstanceRecord, 'pid' | 'startTime'>): string {
  return `${rec.pid}:${rec.startTime}`
}

function substitute(value: string, tokens: Readonly<Record<string, string>>): string {
  return value.replace(/\{\{(\w+)\}\}/g, (m, name: string) => tokens[name] ?? m)
}

/** The last non-empty line of a file (at most 300 characters), or ''. Reads only the file's tail. */
function lastLine(file: string): string {
  let fd: number | undefined
  try {
    fd = openSync(file, 'r')
    const size = fstatSync(fd).size
    const len = Math.min(size, 4096)
    const buf = Buffer.alloc(len)
    readSync(fd, buf, 0, len, size - len)
    const lines = buf
      .toString('utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('--- studiopool'))
    return (lines.at(-1) ?? '').slice(0, 300)
  } catch {
    return ''
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}
