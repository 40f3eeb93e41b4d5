import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { ProviderError } from '../../domain/errors.js'
import type { SlurmProviderSettings } from './slurm-config.js'

const NAME = 'slurm'
/** Field separator of the squeue format: a byte no job name or comment of ours contains. */
export const SEP = '\u001f'
/** id, state, reason, name, start (expected start while pending), time left, user, nodes, comment (last: may hold anything). */
export const SQUEUE_FORMAT = ['%i', '%T', '%r', '%j', '%S', '%L', '%u', '%N', '%k'].join(SEP)
const MAX_OUTPUT = 64 * 1024 * 1024

export interface CommandResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** One job as squeue shows it. */
export interface SlurmJob {
  readonly id: string
  readonly state: string
  readonly reason: string
  readonly name: string
  readonly start: string
  readonly timeLeft: string
  readonly user: string
  readonly nodes: string
  readonly comment: string
}

/** Quotes one word for a POSIX shell. */
export function shq(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`
}

/**
 * Runs the Slurm commands: here, or on the configured submit host over ssh; each with a timeout
 * after which the command is killed and the call fails as retryable (the controller may be slow).
 */
export class SlurmCli {
  readonly #s: SlurmProviderSettings
  /** Calls per command name, for the scheduler-load figures (and tests). */
  readonly calls = new Map<string, number>()

  constructor(settings: SlurmProviderSettings) {
    this.#s = settings
  }

  #bin(cmd: string): string {
    return this.#s.binDir ? join(this.#s.binDir, cmd) : cmd
  }

  /** `prefix` goes before the command (a sudo rule); `stdin` is written to it (the job script: never on a command line). */
  async run(
    cmd: string,
    args: readonly string[],
    opts: { stdin?: string; prefix?: readonly string[] } = {},
  ): Promise<CommandResult> {
    this.calls.set(cmd, (this.calls.get(cmd) ?? 0) + 1)
    let argv = [...(opts.prefix ?? []), this.#bin(cmd), ...args]
    if (this.#s.submitHost) {
      const envs = Object.entries(this.#s.env).map(([k, v]) => `${k}=${shq(v)}`)
      const remote = [...(envs.length ? ['env', ...envs] : []), ...argv.map(shq)].join(' ')
      argv = ['ssh', ...this.#s.sshArgs, this.#s.submitHost, '--', remote]
    }
    const [bin, ...rest] = argv as [string, ...string[]]
    return new Promise<CommandResult>((resolve, reject) => {
      const child = spawn(bin, rest, {
        env: { ...process.env, ...(this.#s.submitHost ? {} : this.#s.env) },
        stdio: ['pipe', 'pipe', 'pipe'],
      })
      const out: Buffer[] = []
      const err: Buffer[] = []
      let size = 0
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(
          new ProviderError(NAME, `${cmd} did not answer within ${Math.round(this.#s.commandTimeoutMs / 1000)}s`, {
            retryable: true,
            code: 'PROVIDER_UNAVAILABLE',
          }),
        )
      }, this.#s.commandTimeoutMs)
      const collect = (into: Buffer[]) => (b: Buffer) => {
        size += b.length
        if (size <= MAX_OUTPUT) into.push(b)
      }
      child.stdout.on('data', collect(out))
      child.stderr.on('data', collect(err))
      child.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer)
        reject(new ProviderError(NAME, `cannot run ${cmd}: ${e.code ?? e.message}`, { cause: e, retryable: true }))
      })
      child.once('close', (code) => {
        clearTimeout(timer)
        resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') })
      })
      child.stdin.on('error', () => {}) // the command may exit before reading its input
      child.stdin.end(opts.stdin ?? '')
    })
  }

  /** Every job the controller knows (all users, all states): one call, filtered by the caller. */
  async squeue(): Promise<SlurmJob[]> {
    const r = await this.run('squeue', ['--noheader', '--all', '--states=all', `--format=${SQUEUE_FORMAT}`])
    if (r.code !== 0)
      throw new ProviderError(NAME, `squeue failed: ${firstLine(r.stderr) || `exit code ${r.code}`}`, {
        retryable: true,
        code: 'PROVIDER_UNAVAILABLE',
      })
    return parseSqueue(r.stdout)
  }
}

export function parseSqueue(text: string): SlurmJob[] {
  const jobs: SlurmJob[] = []
  for (const line of text.split('\n')) {
    const f = line.split(SEP)
    if (f.length < 9 || !/^\d+$/.test(f[0]!.trim())) continue
    const [id, state, reason, name, start, timeLeft, user, nodes] = f.map((x) => x.trim())
    jobs.push({
      id: id!,
      state: state!,
      reason: reason!,
      name: name!,
      start: start!,
      timeLeft: timeLeft!,
      user: user!,
      nodes: nodes!,
      comment: f.slice(8).join(SEP).trim(),
    })
  }
  return jobs
}

export function firstLine(s: string): string {
  const lines = s
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
  // sbatch prints "sbatch: error: Batch job submission failed: <reason>": the last error line says most.
  const errs = lines.filter((l) => /error/i.test(l))
  return (errs.at(-1) ?? lines[0] ?? '').slice(0, 300)
}

/** Slurm's `[D-]HH:MM:SS` / `MM:SS` time left in ms; null for UNLIMITED, NOT_SET, INVALID. */
export function parseTimeLeft(s: string): number | null {
  const m = /^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$/.exec(s)
  if (!m) return null
  const [, d, h, mi, se] = m
  return (((Number(d ?? 0) * 24 + Number(h ?? 0)) * 60 + Number(mi)) * 60 + Number(se)) * 1000
}

/** Job states after which the job never runs again (squeue shows them for MinJobAge). */
export const TERMINAL_STATES = new Set([
  'BOOT_FAIL',
  'CANCELLED',
  'COMPLETED',
  'DEADLINE',
  'FAILED',
  'NODE_FAIL',
  'OUT_OF_MEMORY',
  'PREEMPTED',
  'TIMEOUT',
  'REVOKED',
  'SPECIAL_EXIT',
  'COMPLETING',
])
