import { accessSync, constants, readFileSync, readdirSync, statSync } from 'node:fs'
import { delimiter, isAbsolute, join } from 'node:path'

/**
 * What we read of `/proc/<pid>/stat` (proc(5)): state (field 3), process group (field 5) and the
 * start time in clock ticks since boot (field 22). Start time + pid identify a process for good:
 * a pid can be reused, the pair cannot.
 */
export interface ProcStat {
  readonly state: string
  readonly pgid: number
  readonly startTime: string
}

export const HAS_PROC = (() => {
  try {
    readFileSync('/proc/self/stat', 'utf8')
    return true
  } catch {
    return false
  }
})()

export function readProcStat(pid: number): ProcStat | null {
  if (!HAS_PROC) {
    // Without /proc (macOS), all we can say is whether the pid exists; a reused pid is not detected.
    try {
      process.kill(pid, 0)
      return { state: 'R', pgid: pid, startTime: '' }
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM' ? { state: 'R', pgid: pid, startTime: '' } : null
    }
  }
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // Field 2 (comm) is in parentheses and may itself hold spaces and parentheses: split after the last ')'.
  const close = text.lastIndexOf(')')
  if (close < 0) return null
  const f = text.slice(close + 2).split(' ')
  // f[0] is field 3 (state), f[2] field 5 (pgrp), f[19] field 22 (starttime).
  if (f.length < 20) return null
  return { state: f[0]!, pgid: Number(f[2]), startTime: f[19]! }
}

/** A process that has exited but not been reaped (Z) or is dying (X) is not running. */
export function isRunningState(stat: ProcStat | null): stat is ProcStat {
  return stat !== null && stat.state !== 'Z' && stat.state !== 'X'
}

/** Live (non-zombie) members of a process group. Linux only; elsewhere, `kill(-pgid, 0)`. */
export function groupMembers(pgid: number): number[] {
  if (!HAS_PROC) {
    try {
      process.kill(-pgid, 0)
      return [pgid]
    } catch {
      return []
    }
  }
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    const c = name.charCodeAt(0)
    if (c < 48 || c > 57) continue
    const pid = Number(name)
    const stat = readProcStat(pid)
    if (stat && stat.pgid === pgid && isRunningState(stat)) out.push(pid)
  }
  return out
}

/** Sends a signal to a whole group; false when the group does not exist. */
export function killGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
    throw err
  }
}

/** Finds a program the way `execvp` would; null when it is not there or not executable. */
export function findExecutable(program: string, pathEnv: string | undefined, cwd: string): string | null {
  const candidates = program.includes('/')
    ? [isAbsolute(program) ? program : join(cwd, program)]
    : (pathEnv ?? '')
        .split(delimiter)
        .filter(Boolean)
        .map((dir) => join(dir, program))
  for (const p of candidates) {
    try {
      if (!statSync(p).isFile()) continue
      accessSync(p, constants.X_OK)
      return p
    } catch {
      // not here
    }
  }
  return null
}

/** The environment of a process as a map; null when it is gone or not ours to read. */
function readEnviron(pid: number): Map<string, string> | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/environ`, 'latin1')
  } catch {
    return null
  }
  const out = new Map<string, string>()
  for (const kv of text.split('\0')) {
    const eq = kv.indexOf('=')
    if (eq > 0 && kv.startsWith('STUDIOPOOL_')) out.set(kv.slice(0, eq), kv.slice(eq + 1))
  }
  return out
}

/**
 * Whether the process carries the marker the local provider puts in every session's environment:
 * 'unknown' when its environment cannot be read or is empty (a process in the middle of an exec,
 * as our wrappers are for a moment right after spawn, or a kernel thread), 'no' when it is another's.
 */
export function markerOf(pid: number, scope: string, instanceId: string): 'yes' | 'no' | 'unknown' {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/environ`, 'latin1')
  } catch {
    return 'unknown'
  }
  if (text === '') return 'unknown'
  const env = new Map<string, string>()
  for (const kv of text.split('\0')) {
    const eq = kv.indexOf('=')
    if (eq > 0 && kv.startsWith('STUDIOPOOL_')) env.set(kv.slice(0, eq), kv.slice(eq + 1))
  }
  return env.get('STUDIOPOOL_SCOPE') === scope && env.get('STUDIOPOOL_INSTANCE_ID') === instanceId ? 'yes' : 'no'
}

export interface MarkedProcess {
  readonly pid: number
  readonly startTime: string
  readonly instanceId: string
  readonly template: string
}

/**
 * Group leaders (pid = pgid) that carry this provider's marker (its scope), optionally of one instance: how the
 * provider finds a session process whose record was never written (the server died mid-spawn).
 */
export function findMarked(scope: string, instanceId?: string): MarkedProcess[] {
  if (!HAS_PROC) return []
  const out: MarkedProcess[] = []
  for (const name of readdirSync('/proc')) {
    const c = name.charCodeAt(0)
    if (c < 48 || c > 57) continue
    const pid = Number(name)
    if (pid === process.pid) continue
    const stat = readProcStat(pid)
    if (!stat || stat.pgid !== pid || !isRunningState(stat)) continue
    const env = readEnviron(pid)
    if (!env || env.get('STUDIOPOOL_SCOPE') !== scope) continue
    const id = env.get('STUDIOPOOL_INSTANCE_ID')
    if (!id || (instanceId !== undefined && id !== instanceId)) continue
    out.push({ pid, startTime: stat.startTime, instanceId: id, template: env.get('STUDIOPOOL_TEMPLATE') ?? '' })
  }
  return out
}
