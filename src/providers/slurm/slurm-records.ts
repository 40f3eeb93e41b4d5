import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { isInstanceId } from '../../domain/ids.js'

/**
 * `<dataDir>/slurm/<instanceId>.json`: written before `sbatch` (jobId null) and again with the job
 * id, so a server killed right after `sbatch` finds the job again by its name instead of
 * submitting another. The record, not the job's comment (which its owner can edit), says which
 * instance and labels a job belongs to.
 */
export interface SlurmRecord {
  readonly version: 1
  readonly instanceId: string
  readonly template: string
  readonly jobName: string
  jobId: string | null
  labels: Record<string, string>
  readonly user: string
  readonly submittedAt: number
  /** Set by destroy: the job is ours no more. */
  destroyed?: boolean
  /** stop(): how the job was paused (`hold` while pending, `suspend` while running). */
  paused?: 'hold' | 'suspend'
  /** Last state and address squeue showed: kept through a controller outage and a short loss. */
  lastState?: 'pending' | 'running' | 'stopped'
  lastAddress?: string | null
  /** The template's port range at submit time: a comment's `addr=` outside it is ignored. */
  portRange?: readonly [number, number]
}

export class RecordStore {
  readonly #dir: string
  constructor(dataDir: string) {
    this.#dir = join(dataDir, 'slurm')
  }

  init(): void {
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 })
  }

  read(instanceId: string): SlurmRecord | null {
    if (!isInstanceId(instanceId)) return null
    try {
      const rec = JSON.parse(readFileSync(join(this.#dir, `${instanceId}.json`), 'utf8')) as SlurmRecord
      return rec.version === 1 && rec.instanceId === instanceId ? rec : null
    } catch {
      return null
    }
  }

  write(rec: SlurmRecord): void {
    const file = join(this.#dir, `${rec.instanceId}.json`)
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, JSON.stringify(rec) + '\n', { mode: 0o600 })
    renameSync(tmp, file)
  }

  remove(instanceId: string): void {
    if (isInstanceId(instanceId)) rmSync(join(this.#dir, `${instanceId}.json`), { force: true })
  }

  all(): SlurmRecord[] {
    let names: string[]
    try {
      names = readdirSync(this.#dir)
    } catch {
      return []
    }
    const out: SlurmRecord[] = []
    for (const n of names) {
      if (!n.endsWith('.json')) continue
      const rec = this.read(n.slice(0, -5))
      if (rec) out.push(rec)
    }
    return out
  }
}
