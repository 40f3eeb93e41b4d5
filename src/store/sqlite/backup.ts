import { chmodSync, existsSync, renameSync, rmSync, statSync } from 'node:fs'
import BetterSqlite3 from 'better-sqlite3'

/**
 * `studiopool backup` / `studiopool restore` for the SQLite store (issue 17: a `cp` of a WAL
 * database is not a consistent copy). The backup uses SQLite's online backup API through
 * better-sqlite3: a consistent snapshot while the server keeps writing (WAL readers never block
 * writers). Postgres deployments use pg_dump / pg_restore (README "Operations").
 */

export interface BackupReport {
  readonly file: string
  readonly bytes: number
  readonly pages: number
  readonly ms: number
}

const BUSY_MS = 5000

/** A consistent copy of the live database at `source` into `target` (0600; written aside, then renamed). */
export async function backupSqlite(source: string, target: string): Promise<BackupReport> {
  if (!existsSync(source)) throw new Error(`no database at ${source}`)
  if (existsSync(target)) throw new Error(`${target} exists already; choose a new file`)
  const started = Date.now()
  const db = new BetterSqlite3(source, { readonly: true, fileMustExist: true })
  db.pragma(`busy_timeout = ${BUSY_MS}`)
  const partial = `${target}.partial`
  rmSync(partial, { force: true })
  try {
    const r = await db.backup(partial)
    chmodSync(partial, 0o600)
    checkDatabase(partial)
    renameSync(partial, target)
    return { file: target, bytes: statSync(target).size, pages: r.totalPages, ms: Date.now() - started }
  } catch (err) {
    rmSync(partial, { force: true })
    throw err
  } finally {
    db.close()
  }
}

/**
 * Puts a backup in place of the database at `target` (the server must be stopped). The backup is
 * checked first; the database it replaces, if any, is kept beside it as `<target>.before-restore-<time>`.
 */
export async function restoreSqlite(
  backup: string,
  target: string,
  now = Date.now(),
): Promise<{ file: string; keptAs: string | null }> {
  if (!existsSync(backup)) throw new Error(`no backup at ${backup}`)
  checkDatabase(backup)
  const partial = `${target}.restoring`
  rmSync(partial, { force: true })
  const src = new BetterSqlite3(backup, { readonly: true, fileMustExist: true })
  try {
    await src.backup(partial)
  } finally {
    src.close()
  }
  chmodSync(partial, 0o600)
  let keptAs: string | null = null
  if (existsSync(target)) {
    // A server still holding the database would keep writing to the old file: refuse. Leaving WAL
    // mode needs the only connection to the file, so it fails while any other process has it open.
    const probe = new BetterSqlite3(target, { fileMustExist: true })
    try {
      probe.pragma('busy_timeout = 0')
      const mode = probe.pragma('journal_mode = DELETE', { simple: true })
      if (mode !== 'delete') throw new Error('in use')
    } catch {
      rmSync(partial, { force: true })
      throw new Error(`${target} is in use (is the server still running?): stop it before restoring`)
    } finally {
      probe.close()
    }
    keptAs = `${target}.before-restore-${new Date(now).toISOString().replace(/[:.]/g, '-')}`
    renameSync(target, keptAs)
  }
  for (const f of [`${target}-wal`, `${target}-shm`]) rmSync(f, { force: true })
  renameSync(partial, target)
  return { file: target, keptAs }
}

/** A studiopool database that passes SQLite's quick_check; else throws saying what is wrong. */
function checkDatabase(file: string): void {
  const db = new BetterSqlite3(file, { readonly: true, fileMustExist: true })
  try {
    const check = db.pragma('quick_check') as { quick_check: string }[]
    if (check[0]?.quick_check !== 'ok') throw new Error(`${file} is damaged: ${check[0]?.quick_check ?? 'no answer'}`)
    const t = db.prepare(
      `select count(*) as n from sqlite_master where type = 'table' and name = 'studiopool_migration'`,
    )
    if (Number((t.get() as { n: number }).n) === 0) throw new Error(`${file} is not a studiopool database`)
  } catch (err) {
    if ((err as { code?: string }).code === 'SQLITE_NOTADB')
      throw new Error(`${file} is not an SQLite database`, { cause: err })
    throw err
  } finally {
    db.close()
  }
}
