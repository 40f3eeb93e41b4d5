/**
 * "A 0-byte or damaged database is not a new install" (issue 9 item 5). `truncate -s0` of the
 * SQLite file used to start afresh and print a new admin key, forgetting every instance, key and
 * assignment, and then reaping the live sessions as orphans. Now the server refuses to start
 * (StartupRefusedError, exit 2) when the store is empty but the data directory shows it was in use,
 * and when SQLite's `PRAGMA quick_check` finds damage.
 *
 * What shows a store was in use: the marker `<dataDir>/store-in-use.json` (written once a store has
 * been initialised, naming it, so a deliberately new store elsewhere is not refused), a SQLite WAL
 * file beside an empty or missing database, or local instance records under `<dataDir>/instances/`.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { StartupRefusedError } from '../domain/errors.js'
import type { StoreConfig } from './dialects.js'

export const MARKER_FILE = 'store-in-use.json'

interface Marker {
  readonly version: 1
  readonly stores: {
    readonly id: string
    readonly driver: string
    readonly where: string
    readonly initializedAt: string
  }[]
}

/** Where the store is, for messages: the SQLite path, or the Postgres URL without its password. */
export function storeWhere(cfg: StoreConfig): string {
  if (cfg.driver === 'sqlite') return resolve(cfg.path)
  return cfg.url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@')
}

function storeId(cfg: StoreConfig): string {
  return createHash('sha256')
    .update(`${cfg.driver}\u0000${cfg.driver === 'sqlite' ? resolve(cfg.path) : cfg.url}`)
    .digest('hex')
    .slice(0, 16)
}

function readMarker(dataDir: string): Marker | undefined {
  try {
    const m = JSON.parse(readFileSync(join(dataDir, MARKER_FILE), 'utf8')) as Marker
    return Array.isArray(m.stores) ? m : undefined
  } catch {
    return undefined
  }
}

/** Records that this store is initialised and in use (idempotent; atomic rename). */
export function writeMarker(cfg: StoreConfig, dataDir: string, now = new Date()): void {
  const id = storeId(cfg)
  const m = readMarker(dataDir) ?? { version: 1 as const, stores: [] }
  if (m.stores.some((s) => s.id === id)) return
  mkdirSync(dataDir, { recursive: true })
  const next: Marker = {
    version: 1,
    stores: [...m.stores, { id, driver: cfg.driver, where: storeWhere(cfg), initializedAt: now.toISOString() }],
  }
  const tmp = join(dataDir, `.${MARKER_FILE}.${process.pid}`)
  writeFileSync(tmp, JSON.stringify(next, null, 2) + '\n')
  renameSync(tmp, join(dataDir, MARKER_FILE))
}

/** What in the data directory shows this store was in use; empty for a new install. */
export function inUseEvidence(cfg: StoreConfig, dataDir: string): string[] {
  const out: string[] = []
  const marker = readMarker(dataDir)
  const mine = marker?.stores.find((s) => s.id === storeId(cfg))
  if (mine) out.push(`${join(dataDir, MARKER_FILE)} records this store as initialised on ${mine.initializedAt}`)
  if (cfg.driver === 'sqlite') {
    const wal = `${resolve(cfg.path)}-wal`
    if (existsSync(wal) && statSync(wal).size > 0) out.push(`a write-ahead log ${wal} is there`)
  }
  const instances = join(dataDir, 'instances')
  if (existsSync(instances)) {
    const n = readdirSync(instances).filter((e) => !e.startsWith('.')).length
    if (n > 0)
      out.push(
        `${instances} holds ${n} instance record${n === 1 ? '' : 's'} (their processes would be reaped as orphans)`,
      )
  }
  return out
}

/** Refuses to go on with an empty store whose data directory shows it was in use. */
export function refuseEmptyInUse(
  cfg: StoreConfig,
  dataDir: string,
  state: 'missing' | 'empty (0 bytes)' | 'empty (no studiopool tables)',
): void {
  const evidence = inUseEvidence(cfg, dataDir)
  if (evidence.length === 0) return
  const where = storeWhere(cfg)
  throw new StartupRefusedError(
    [
      `studiopool: refusing to start: the store ${where} is ${state}, but it was in use:`,
      ...evidence.map((e) => `  - ${e}`),
      'Starting would begin a new, empty store and forget every instance, key and session history.',
      cfg.driver === 'sqlite'
        ? `Restore ${where} from a backup (with its -wal file if there is one). To start over on purpose, move ${dataDir} (and ${where}) away first.`
        : `Point store.url at the database that holds the data, or restore it from a backup. To start over on purpose, remove ${join(dataDir, MARKER_FILE)} (and ${join(dataDir, 'instances')}) first.`,
    ].join('\n'),
  )
}

/** Refuses to start on a damaged SQLite file; `problems` are quick_check's (or the open error's) words. */
export function refuseDamaged(path: string, problems: readonly string[]): never {
  throw new StartupRefusedError(
    [
      `studiopool: refusing to start: the SQLite database ${resolve(path)} is damaged:`,
      ...problems.slice(0, 10).map((p) => `  - ${p}`),
      `Stop every studiopool process, keep a copy of the file, and restore it from a backup; or try \`sqlite3 ${resolve(path)} .recover\` into a new file and point store.path at it.`,
    ].join('\n'),
  )
}
