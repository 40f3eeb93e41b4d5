import {
  closeSync,
  fstatSync,
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
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ProviderError } from '../../domain/errors.js'
import { isInstanceId } from '../../domain/ids.js'
import { LABEL_POOL } from '../provider.js'
import { isRunningState, readProcStat } from './local-proc.js'

/**
 * The local provider's bookkeeping of one instance, in `<dataDir>/instances/<id>/`: the record
 * (`instance.json`), the output log, and the create lock shared by server processes on one machine.
 */

export const NAME = 'local'
export const RECORD_FILE = 'instance.json'
export const LOG_FILE = 'output.log'
export const LOCK_FILE = 'create.lock'
/** How long a create waits for another server process that holds the same instance's lock. */
const LOCK_WAIT_MS = 15_000
export const POLL_MS = 25
/** `<pid>:<start time>`: what a ref of this provider looks like. */
export const REF_RE = /^(\d{1,10}):(\d{0,20})$/

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

export function refOf(rec: Pick<LocalInstanceRecord, 'pid' | 'startTime'>): string {
  return `${rec.pid}:${rec.startTime}`
}

/** The records under one `<dataDir>/instances` directory: read and written whole, atomically. */
export class RecordFiles {
  constructor(readonly root: string) {}

  /** Bookkeeping of one instance (record, output.log, lock): inside the data directory, never readable by sessions. */
  dir(instanceId: string): string {
    if (!isInstanceId(instanceId))
      throw new ProviderError(NAME, `invalid instance id "${String(instanceId).slice(0, 40)}"`)
    return join(this.root, instanceId)
  }

  /** Every record of this pool. */
  all(poolId: string): LocalInstanceRecord[] {
    let names: string[]
    try {
      names = readdirSync(this.root)
    } catch {
      return []
    }
    const out: LocalInstanceRecord[] = []
    for (const name of names) {
      if (!isInstanceId(name)) continue
      const rec = this.read(name)
      if (rec && rec.labels[LABEL_POOL] === poolId) out.push(rec)
    }
    return out
  }

  read(instanceId: string): LocalInstanceRecord | null {
    try {
      const rec = JSON.parse(readFileSync(join(this.root, instanceId, RECORD_FILE), 'utf8')) as LocalInstanceRecord
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

  write(rec: LocalInstanceRecord): void {
    const file = join(this.root, rec.instanceId, RECORD_FILE)
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 })
    renameSync(tmp, file)
  }

  lockFile(instanceId: string): string {
    return join(this.root, instanceId, LOCK_FILE)
  }

  /** The last line the instance's process wrote to its output log (see `lastLine`). */
  lastLogLine(instanceId: string): string {
    return lastLine(join(this.root, instanceId, LOG_FILE))
  }
}

/** Lock files held by this process (several provider objects may share one data directory). */
const heldLocks = new Set<string>()

/**
 * An exclusive lock file holding the owner's pid, so that two server processes on one machine
 * (split roles share the data directory) never start two processes for one instanceId. A lock
 * whose owner is gone is taken over.
 */
export async function fileLock(path: string, signal: AbortSignal | undefined): Promise<() => void> {
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
