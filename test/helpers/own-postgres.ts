/**
 * A throwaway Postgres cluster of the test's own (issue 9 item 4: outages are injected by stopping
 * and SIGSTOPping Postgres; the machine's shared Postgres on 5432 is never touched). initdb in a
 * temp dir owned by the postgres account, the server on a free loopback port, stopped by its pid.
 */
import { execFileSync, spawn } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { freePort, waitFor } from './wait.js'

export interface OwnPostgres {
  readonly url: string
  /** The postmaster's pid. */
  readonly pid: number
  /** The postmaster and every process it started (the backends that hold our connections). */
  pids(): number[]
  /** SIGSTOP (freeze) or SIGCONT every process of the cluster. */
  signalAll(signal: 'SIGSTOP' | 'SIGCONT'): void
  /** Fast shutdown by pid; waits until the postmaster has gone. */
  stop(): Promise<void>
  /** stop() and remove the directory. */
  destroy(): Promise<void>
}

export function postgresBinDir(): string | undefined {
  const base = '/usr/lib/postgresql'
  if (!existsSync(base)) return undefined
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a))
  return versions[0] ? join(base, versions[0], 'bin') : undefined
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

export async function startOwnPostgres(): Promise<OwnPostgres> {
  const bin = postgresBinDir()
  if (!bin) throw new Error('no Postgres binaries under /usr/lib/postgresql/*/bin')
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim())
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim())
  const dir = mkdtempSync(join(tmpdir(), 'sp-ownpg-'))
  chownSync(dir, uid, gid)
  const data = join(dir, 'data')
  execFileSync(
    'runuser',
    ['-u', 'postgres', '--', join(bin, 'initdb'), '-D', data, '-A', 'trust', '-U', 'postgres', '-N', '-E', 'UTF8'],
    { stdio: 'ignore' },
  )
  const port = await freePort()
  const child = spawn(
    'runuser',
    [
      '-u',
      'postgres',
      '--',
      join(bin, 'postgres'),
      '-D',
      data,
      '-p',
      String(port),
      '-k',
      dir,
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'fsync=off',
      '-c',
      'max_connections=40',
    ],
    { stdio: 'ignore' },
  )
  child.unref()
  const pid = await waitFor(
    'postmaster.pid',
    () => {
      const f = join(data, 'postmaster.pid')
      return existsSync(f) ? Number(readFileSync(f, 'utf8').split('\n')[0]) || undefined : undefined
    },
    30_000,
  )
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  await waitFor(
    'own Postgres accepting connections',
    async () => {
      const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 })
      try {
        await c.connect()
        await c.query('select 1')
        return true
      } finally {
        await c.end().catch(() => {})
      }
    },
    30_000,
  )
  const pids = () => {
    const out = [pid]
    for (const p of readdirSync('/proc')) {
      if (!/^\d+$/.test(p)) continue
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8')
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
        if (ppid === pid) out.push(Number(p))
      } catch {
        // gone
      }
    }
    return out
  }
  const stop = async () => {
    if (!alive(pid)) return
    for (const p of pids()) {
      try {
        process.kill(p, 'SIGCONT')
      } catch {
        // gone
      }
    }
    process.kill(pid, 'SIGINT')
    await waitFor('own Postgres to stop', () => !alive(pid), 30_000)
  }
  return {
    url,
    pid,
    pids,
    signalAll(signal) {
      // The postmaster first on SIGSTOP (no new backends), last on SIGCONT.
      const list = signal === 'SIGSTOP' ? pids() : pids().reverse()
      for (const p of list) {
        try {
          process.kill(p, signal)
        } catch {
          // gone
        }
      }
    },
    stop,
    async destroy() {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
