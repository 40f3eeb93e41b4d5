/**
 * "A 0-byte or damaged database is not a new install" (issue 9 item 5), with the real binary:
 * - SQLite: `truncate -s0` of a database that was in use, and a garbage page in its middle, make
 *   `serve` exit 2 naming the file and what to do, without printing a new admin key; a new install
 *   still starts.
 * - Postgres: the same data directory pointed at its emptied schema exits 2; a new schema elsewhere
 *   (a deliberate new store) starts.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import BetterSqlite3 from 'better-sqlite3'
import pg from 'pg'
import { BIN, api, spawnServer } from '../helpers/server-process.js'
import { dropSchemas, freshPgUrl, PG_SKIP } from '../helpers/pg.js'
import { pgClientConfig } from '../../src/store/dialects.js'

after(dropSchemas)

const dirs: string[] = []
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})
const tempDir = (p: string) => {
  const d = mkdtempSync(join(tmpdir(), p))
  dirs.push(d)
  return d
}

const yaml = (store: string, dataDir: string) =>
  `${store}\nserver: { dataDir: ${JSON.stringify(dataDir)} }\nworker: { enabled: false }\ntemplates:\n  demo:\n    provider: fake\n`

/** Runs `serve` until it exits (it must, within the timeout) and returns its code and output. */
async function serveUntilExit(
  cwd: string,
  config: string,
  timeoutMs = 30_000,
): Promise<{ code: number | null; out: string }> {
  const cfg = join(cwd, 'studiopool.yaml')
  writeFileSync(cfg, config)
  const child = spawn(process.execPath, [BIN, 'serve', '--config', cfg, '--port', '0'], {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: cwd, STUDIOPOOL_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
  clearTimeout(timer)
  return { code, out }
}

/** Starts the binary on a data dir, makes it record something (an API key), and stops it. */
async function useOnce(dir: string, config: string): Promise<void> {
  const s = await spawnServer({ cwd: dir, config })
  try {
    assert.ok(s.adminKey, 'a first start prints the admin key')
    const r = await api(s.url, s.adminKey!, 'POST', '/api/v1/keys', { name: 'portal', role: 'requester' })
    assert.equal(r.status, 201)
  } finally {
    await s.kill()
  }
}

describe('a 0-byte or damaged SQLite database is not a new install', () => {
  test('truncate -s0: exit 2 naming the file, no new admin key; a new install starts', async () => {
    const dir = tempDir('sp-refuse-sqlite-')
    const dataDir = join(dir, 'data')
    const db = join(dataDir, 'studiopool.db')
    const config = yaml(`store: { driver: sqlite, path: ${JSON.stringify(db)} }`, dataDir)
    await useOnce(dir, config)
    assert.ok(existsSync(join(dataDir, 'store-in-use.json')), 'the in-use marker is written')

    truncateSync(db, 0)
    const r = await serveUntilExit(dir, config)
    assert.equal(r.code, 2, r.out)
    assert.ok(r.out.includes(db), `the message names ${db}: ${r.out}`)
    assert.match(r.out, /empty \(0 bytes\)/)
    assert.match(r.out, /[Rr]estore .* from a backup/)
    assert.doesNotMatch(r.out, /first admin key|listening on/)
    assert.equal(statSync(db).size, 0, 'the file is left as it was')

    // Missing altogether: refused too.
    rmSync(db)
    const gone = await serveUntilExit(dir, config)
    assert.equal(gone.code, 2, gone.out)
    assert.match(gone.out, /is missing/)
    assert.equal(existsSync(db), false, 'refusing does not create the file')
  })

  test('a garbage page in the middle: exit 2 at start (quick_check), not a failing worker', async () => {
    const dir = tempDir('sp-refuse-page-')
    const dataDir = join(dir, 'data')
    const db = join(dataDir, 'studiopool.db')
    const config = yaml(`store: { driver: sqlite, path: ${JSON.stringify(db)} }`, dataDir)
    await useOnce(dir, config)
    // Enough rows for many pages, checkpointed into the main file.
    const h = new BetterSqlite3(db)
    const ins = h.prepare(
      `insert into audit_log (at, instance_id, event, actor, detail) values (?, null, 'filler', 'test', ?)`,
    )
    h.transaction(() => {
      for (let i = 0; i < 3000; i++) ins.run(i, 'x'.repeat(100))
    })()
    h.pragma('wal_checkpoint(TRUNCATE)')
    const pageSize = Number(h.pragma('page_size', { simple: true }))
    h.close()
    const pages = Math.floor(statSync(db).size / pageSize)
    assert.ok(pages > 20, `${pages} pages`)
    const fd = openSync(db, 'r+')
    writeSync(fd, randomBytes(pageSize), 0, pageSize, Math.floor(pages / 2) * pageSize)
    closeSync(fd)

    const r = await serveUntilExit(dir, config)
    assert.equal(r.code, 2, r.out)
    assert.ok(r.out.includes(db), r.out)
    assert.match(r.out, /is damaged/)
    assert.doesNotMatch(r.out, /worker cycle failed|listening on/)
  })

  test('without the marker (an install from before it): a WAL left by kill -9, or instance records, still show it was in use', async () => {
    const dir = tempDir('sp-refuse-wal-')
    const dataDir = join(dir, 'data')
    const db = join(dataDir, 'studiopool.db')
    const config = yaml(`store: { driver: sqlite, path: ${JSON.stringify(db)} }`, dataDir)
    const s = await spawnServer({ cwd: dir, config })
    assert.equal(
      (await api(s.url, s.adminKey!, 'POST', '/api/v1/keys', { name: 'portal', role: 'requester' })).status,
      201,
    )
    await s.kill('SIGKILL')
    rmSync(join(dataDir, 'store-in-use.json'))
    assert.ok(existsSync(`${db}-wal`), 'kill -9 leaves the WAL')
    truncateSync(db, 0)
    const r = await serveUntilExit(dir, config)
    assert.equal(r.code, 2, r.out)
    assert.match(r.out, /write-ahead log/)

    rmSync(`${db}-wal`, { force: true })
    rmSync(`${db}-shm`, { force: true })
    mkdirSync(join(dataDir, 'instances', 'abcdefghijklmnopqrst'), { recursive: true })
    const r2 = await serveUntilExit(dir, config)
    assert.equal(r2.code, 2, r2.out)
    assert.match(r2.out, /holds 1 instance record .*orphans/)
  })

  test('a new install (no marker, no records) starts, even with an empty file', async () => {
    const dir = tempDir('sp-refuse-new-')
    const dataDir = join(dir, 'data')
    const db = join(dir, 'elsewhere.db')
    writeFileSync(db, '')
    const s = await spawnServer({
      cwd: dir,
      config: yaml(`store: { driver: sqlite, path: ${JSON.stringify(db)} }`, dataDir),
    })
    assert.ok(s.adminKey)
    await s.kill()
  })
})

describe(
  'an emptied Postgres store is not a new install',
  { skip: PG_SKIP ? 'STUDIOPOOL_SKIP_PG=1' : undefined },
  () => {
    test('the schema emptied: exit 2 naming the store (no password); a new schema elsewhere starts', async () => {
      const dir = tempDir('sp-refuse-pg-')
      const dataDir = join(dir, 'data')
      const url = await freshPgUrl()
      const config = yaml(`store: { driver: postgres, url: ${JSON.stringify(url)} }`, dataDir)
      await useOnce(dir, config)

      const schema = /search_path%3D([^&]+)|search_path=([^&]+)/.exec(url)!
      const name = decodeURIComponent(schema[1] ?? schema[2]!)
      const c = new pg.Client(pgClientConfig(url.replace(/\?.*$/, '')))
      await c.connect()
      try {
        await c.query(`drop schema "${name}" cascade`)
        await c.query(`create schema "${name}"`)
      } finally {
        await c.end()
      }
      const r = await serveUntilExit(dir, config)
      assert.equal(r.code, 2, r.out)
      assert.match(r.out, /empty \(no studiopool tables\)/)
      assert.ok(r.out.includes('store-in-use.json'), r.out)
      assert.doesNotMatch(r.out, /first admin key|listening on/)

      // A different (new) store with the same data directory is a deliberate choice: it starts.
      const other = await freshPgUrl()
      const s = await spawnServer({
        cwd: dir,
        config: yaml(`store: { driver: postgres, url: ${JSON.stringify(other)} }`, dataDir),
      })
      assert.ok(s.adminKey)
      await s.kill()
    })
  },
)
