/**
 * `studiopool backup` while the server writes, and `studiopool restore` into a fresh data directory:
 * the restored server has every key created before the backup, and the copy is consistent (issue 17:
 * a `cp` of a WAL database is not).
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { api, BIN, spawnServer, type ServerProcess } from '../helpers/server-process.js'

const dir = mkdtempSync(join(tmpdir(), 'sp-backup-'))
const procs: ServerProcess[] = []
after(async () => {
  for (const p of procs) await p.kill()
  rmSync(dir, { recursive: true, force: true })
})

function run(args: string[], cwd: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [BIN, ...args], {
      cwd,
      env: { PATH: process.env.PATH ?? '', HOME: cwd },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    c.stdout.on('data', (d: Buffer) => (out += d.toString()))
    c.stderr.on('data', (d: Buffer) => (err += d.toString()))
    c.once('exit', (code) => resolve({ code, out, err }))
  })
}

const config = (data: string) =>
  `server: { dataDir: ${JSON.stringify(data)} }\ntemplates:\n  demo:\n    provider: fake\n    minFree: 0\n`

test('backup while writing, restore into a new data directory: every key made before the backup is there', async () => {
  const a = join(dir, 'a')
  const s = await spawnServer({ cwd: dir, config: config(join(a, 'data')) })
  procs.push(s)
  const key = s.adminKey!
  const before: string[] = []
  for (let i = 0; i < 20; i++) {
    const r = await api<{ id: string }>(s.url, key, 'POST', '/api/v1/keys', { name: `before-${i}`, role: 'requester' })
    assert.ok(r.status < 300, JSON.stringify(r.body))
    before.push(`before-${i}`)
  }
  // A writer keeps creating keys while the backup runs.
  let writing = true
  let during = 0
  const writer = (async () => {
    while (writing) {
      const r = await api(s.url, key, 'POST', '/api/v1/keys', { name: `during-${during}`, role: 'requester' })
      if (r.status < 300) during++
    }
  })()
  const file = join(dir, 'studiopool-backup.db')
  const b = await run(['backup', file, '-c', join(dir, 'studiopool.yaml')], dir)
  writing = false
  await writer
  assert.equal(b.code, 0, b.err)
  assert.match(
    b.out,
    /^studiopool backup: .*studiopool\.db → .*studiopool-backup\.db \(\d+ bytes, \d+ pages, \d+ ms\)\n$/,
  )
  assert.equal(statSync(file).mode & 0o777, 0o600)
  assert.ok(during > 0, 'keys were written while the backup ran')

  const again = await run(['backup', file, '-c', join(dir, 'studiopool.yaml')], dir)
  assert.equal(again.code, 1)
  assert.match(again.err, /exists already; choose a new file/)

  // Restore into a fresh data directory of a second configuration, then start from it.
  const bdir = join(dir, 'b')
  const cfgB = join(dir, 'b.yaml')
  writeFileSync(cfgB, config(join(bdir, 'data')))
  const { mkdirSync } = await import('node:fs')
  mkdirSync(join(bdir, 'data'), { recursive: true })
  const r = await run(['restore', file, '-c', cfgB], dir)
  assert.equal(r.code, 0, r.err)
  assert.ok(existsSync(join(bdir, 'data/studiopool.db')))

  const s2 = await spawnServer({ cwd: bdir, config: config(join(bdir, 'data')) })
  procs.push(s2)
  assert.equal(s2.adminKey, undefined, 'the restored store has its admin key: no new one is made')
  const keys = await api<{ keys: { name: string }[] }>(s2.url, key, 'GET', '/api/v1/keys')
  assert.equal(keys.status, 200, 'the admin key of the backed-up server works on the restored one')
  const names = new Set(keys.body.keys.map((k) => k.name))
  for (const n of before) assert.ok(names.has(n), `${n} is in the restored store`)
  const copied = [...names].filter((n) => n.startsWith('during-')).length
  assert.ok(copied <= during, 'nothing the writer did not write')
  // Consistent: the keys made during the backup are a prefix (no gaps), as of one moment.
  for (let i = 0; i < copied; i++) assert.ok(names.has(`during-${i}`), `during-${i} (a snapshot has no gaps)`)

  // Restoring over the running server's database is refused; stopped, it keeps the old file aside.
  const busy = await run(['restore', file, '-c', cfgB], dir)
  assert.equal(busy.code, 1, busy.out)
  assert.match(busy.err, /studiopool\.db is in use \(is the server still running\?\): stop it before restoring/)
  await s2.kill()
  const over = await run(['restore', file, '-c', cfgB], dir)
  assert.equal(over.code, 0, over.err)
  assert.match(over.out, /the previous database is kept as .*studiopool\.db\.before-restore-/)
})

test('a Postgres store: backup says to use pg_dump (exit 2)', async () => {
  const cfg = join(dir, 'pg.yaml')
  writeFileSync(
    cfg,
    'store: { driver: postgres, url: "postgres://127.0.0.1:5432/test" }\ntemplates:\n  demo:\n    provider: fake\n',
  )
  const r = await run(['backup', join(dir, 'x.db'), '-c', cfg], dir)
  assert.equal(r.code, 2)
  assert.equal(
    r.err,
    'studiopool backup: the store is Postgres: use pg_dump --format=custom --file=studiopool.dump "$DATABASE_URL" (README "Operations")\n',
  )
})
