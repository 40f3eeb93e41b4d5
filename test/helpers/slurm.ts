/**
 * A private single-node Slurm cluster per test file: its own munged (key, socket), slurmctld and
 * slurmd on loopback ports chosen free, config in its own directory (SLURM_CONF), state and spool
 * dirs there too. Every daemon is started in the foreground and stopped by its pid.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, waitFor } from './wait.js'

const BINARIES = ['/usr/sbin/munged', '/usr/sbin/slurmctld', '/usr/sbin/slurmd', '/usr/bin/sbatch', '/usr/bin/squeue']
/** The account test jobs run as (sbatch --uid): never root. */
export const SLURM_TEST_USER = 'nobody'

/** Why this machine cannot run the Slurm tests, or null. CI installs the packages (.ci/run). */
export function slurmSkipReason(): string | null {
  if (process.env.CI && process.getuid?.() === 0) return null // CI never skips: a missing binary fails loudly
  const missing = BINARIES.filter((b) => !existsSync(b))
  if (missing.length)
    return `Slurm is not installed (${missing.join(', ')}): apt-get install munge slurmctld slurmd slurm-client`
  if (process.getuid?.() !== 0) return 'the Slurm tests start slurmd, which needs root'
  return null
}

export interface TestSlurm {
  readonly dir: string
  /** Environment for Slurm commands against this cluster ({ SLURM_CONF }). */
  readonly env: Readonly<Record<string, string>>
  readonly nodeName: string
  readonly partition: string
  /** Runs a Slurm client command against this cluster. */
  cmd(bin: string, args: readonly string[]): { code: number | null; stdout: string; stderr: string }
  /** Stops slurmctld (SIGTERM, by pid) and waits until it is gone; jobs keep running on slurmd. */
  stopController(): Promise<void>
  startController(): Promise<void>
  /** Cancels every job, then stops slurmd, slurmctld and munged by pid and removes the directory. */
  stop(): Promise<void>
}

export interface StartSlurmOptions {
  /** CPUs of the one node (each test job takes one). Default 2. */
  cpus?: number
}

function daemon(bin: string, args: readonly string[], env: NodeJS.ProcessEnv, log: string): ChildProcess {
  const out = join(log)
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const chunks: string[] = []
  const keep = (b: Buffer) => {
    chunks.push(b.toString())
    if (chunks.length > 200) chunks.shift()
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  child.once('exit', () => {
    try {
      writeFileSync(out, chunks.join(''))
    } catch {
      // the directory may be gone already
    }
  })
  return child
}

async function stopChild(child: ChildProcess | null, what: string): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
  const gone = new Promise<void>((r) => child.once('exit', () => r()))
  process.kill(child.pid, 'SIGTERM')
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null && child.pid) process.kill(child.pid, 'SIGKILL')
  }, 10_000)
  await gone
  clearTimeout(timer)
  void what
}

export async function startSlurm(opts: StartSlurmOptions = {}): Promise<TestSlurm> {
  const dir = mkdtempSync(join(tmpdir(), 'studiopool-slurm-'))
  // Job users (nobody) reach the munge socket for `scontrol update` from inside their job.
  chmodSync(dir, 0o755)
  const mungeDir = join(dir, 'munge')
  for (const d of ['state', 'spool', 'log']) mkdirSync(join(dir, d), { recursive: true })
  mkdirSync(mungeDir, { mode: 0o755 })
  chmodSync(mungeDir, 0o755)
  const key = join(dir, 'munge.key')
  writeFileSync(key, randomBytes(1024), { mode: 0o400 })
  const socket = join(mungeDir, 'munge.socket')
  const env = { ...process.env, SLURM_CONF: join(dir, 'slurm.conf') }
  const munged = daemon(
    '/usr/sbin/munged',
    [
      '-F',
      '-f',
      `--key-file=${key}`,
      `--socket=${socket}`,
      `--pid-file=${join(dir, 'munged.pid')}`,
      `--seed-file=${join(dir, 'munged.seed')}`,
      `--log-file=${join(dir, 'log', 'munged.log')}`,
      '--num-threads=4',
    ],
    env,
    join(dir, 'log', 'munged.out'),
  )
  await waitFor('munged socket', () => existsSync(socket), 10_000)
  const nodeName = `sp${randomBytes(3).toString('hex')}`
  const [ctldPort, dPort] = [await freePort(), await freePort()]
  const cpus = opts.cpus ?? 2
  const host = hostname().split('.')[0]!
  writeFileSync(
    env.SLURM_CONF,
    [
      `ClusterName=${nodeName}`,
      `SlurmctldHost=${host}(127.0.0.1)`,
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${dPort}`,
      'AuthType=auth/munge',
      'CredType=cred/munge',
      `AuthInfo=socket=${socket}`,
      'SlurmUser=root',
      'SlurmdUser=root',
      `StateSaveLocation=${join(dir, 'state')}`,
      `SlurmdSpoolDir=${join(dir, 'spool')}`,
      `SlurmctldPidFile=${join(dir, 'slurmctld.pid')}`,
      `SlurmdPidFile=${join(dir, 'slurmd.pid')}`,
      `SlurmctldLogFile=${join(dir, 'log', 'slurmctld.log')}`,
      `SlurmdLogFile=${join(dir, 'log', 'slurmd.log')}`,
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'JobCompType=jobcomp/none',
      'MpiDefault=none',
      'CommunicationParameters=NoInAddrAny,NoCtldInAddrAny',
      'MailProg=/bin/true',
      'SchedulerType=sched/backfill',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_Core',
      'ReturnToService=2',
      // A node may claim more CPUs than the machine has (jobs here are tiny): no INVAL node.
      'SlurmdParameters=config_overrides',
      'SlurmctldTimeout=300',
      'SlurmdTimeout=300',
      'MinJobAge=300',
      'KillWait=5',
      `NodeName=${nodeName} NodeAddr=127.0.0.1 NodeHostname=${host} CPUs=${cpus} State=UNKNOWN`,
      `PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP`,
      '',
    ].join('\n'),
  )
  let ctld: ChildProcess | null = null
  const startController = async (): Promise<void> => {
    ctld = daemon('/usr/sbin/slurmctld', ['-D', '-f', env.SLURM_CONF], env, join(dir, 'log', 'slurmctld.out'))
    await waitFor('slurmctld to answer', () => cmd('/usr/bin/sinfo', ['-h', '-o', '%T']).code === 0, 30_000)
  }
  const cmd = (bin: string, args: readonly string[]) => {
    const r = spawnSync(bin, args, { env, encoding: 'utf8', timeout: 30_000 })
    return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
  }
  try {
    await startController()
  } catch (err) {
    const logs = tail(join(dir, 'log', 'slurmctld.log'))
    await stopChild(ctld, 'slurmctld')
    await stopChild(munged, 'munged')
    rmSync(dir, { recursive: true, force: true })
    throw new Error(`${(err as Error).message}\n${logs}`, { cause: err })
  }
  const slurmd = daemon(
    '/usr/sbin/slurmd',
    ['-D', '-N', nodeName, '-f', env.SLURM_CONF],
    env,
    join(dir, 'log', 'slurmd.out'),
  )
  try {
    await waitFor(
      'the node to be idle',
      () => /idle/.test(cmd('/usr/bin/sinfo', ['-h', '-N', '-o', '%T']).stdout),
      30_000,
    )
  } catch (err) {
    const logs = tail(join(dir, 'log', 'slurmctld.log')) + '\n' + tail(join(dir, 'log', 'slurmd.log'))
    await stopChild(slurmd, 'slurmd')
    await stopChild(ctld, 'slurmctld')
    await stopChild(munged, 'munged')
    rmSync(dir, { recursive: true, force: true })
    throw new Error(`${(err as Error).message}\n${logs}`, { cause: err })
  }
  return {
    dir,
    env: { SLURM_CONF: env.SLURM_CONF },
    nodeName,
    partition: 'debug',
    cmd,
    stopController: async () => {
      await stopChild(ctld, 'slurmctld')
      ctld = null
    },
    startController,
    stop: async () => {
      if (!ctld) await startController().catch(() => {})
      cmd('/usr/bin/scancel', ['--full', `--partition=debug`])
      await waitFor(
        'every job to end',
        () => cmd('/usr/bin/squeue', ['-h', '-t', 'PD,R,CG,S,CF', '-o', '%i']).stdout.trim() === '',
        30_000,
      ).catch(() => {})
      await stopChild(slurmd, 'slurmd')
      await stopChild(ctld, 'slurmctld')
      await stopChild(munged, 'munged')
      // A job scancel did not end in time (a suspended one, a wedged step) outlives slurmd: its
      // batch script runs from this cluster's spool, and every process of a job carries this
      // cluster's SLURM_CONF in its environment (an app whose batch script has already exited
      // too: a CI run found one, re-parented to init), so their process groups are ours to end.
      killJobsUnder(join(dir, 'spool') + '/', `SLURM_CONF=${join(dir, 'slurm.conf')}\0`)
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * SIGKILLs the process group of every process whose command line names a file under `spool` (a
 * batch script), and every job process: one whose environment holds `envEntry` and a
 * SLURM_JOB_ID (each job's processes inherit both; a server a test started with this cluster's
 * SLURM_CONF has no SLURM_JOB_ID and is left alone).
 */
function killJobsUnder(spool: string, envEntry: string): void {
  const pids = new Set<number>()
  const groups = new Set<number>()
  for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    const pid = Number(name)
    if (pid === process.pid) continue
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(spool)) {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
        const pgid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2])
        if (pgid > 1) groups.add(pgid)
      }
      const environ = readFileSync(`/proc/${pid}/environ`, 'latin1')
      if (environ.includes(envEntry) && /(^|\0)SLURM_JOB_ID=/.test(environ)) pids.add(pid)
    } catch {
      // exited meanwhile, or not ours to read
    }
  }
  for (const g of groups) {
    try {
      process.kill(-g, 'SIGKILL')
    } catch {
      // gone already
    }
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone already
    }
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n')
  } catch {
    return ''
  }
}
