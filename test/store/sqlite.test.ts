import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import pino from 'pino'
import BetterSqlite3 from 'better-sqlite3'
import { createStore } from '../../src/store/sql-store.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { storeContract } from '../contract/store-contract.js'
import { MIGRATION_NAMES } from '../../src/store/migrations/index.js'

const dir = mkdtempSync(join(tmpdir(), 'studiopool-sqlite-'))
after(() => rmSync(dir, { recursive: true, force: true }))
const log = pino({ level: 'silent' })
let n = 0

storeContract('sqlite', () =>
  createStore({ driver: 'sqlite', path: join(dir, `contract-${++n}.db`) }, { log, poolId: 'test' }),
)

test('sqlite: creates the directory, uses WAL, survives a restart without re-running migrations', async () => {
  const path = join(dir, 'nested', 'deeper', 'pool.db')
  const s1 = await createStore({ driver: 'sqlite', path }, { log, poolId: 'test' })
  assert.ok(existsSync(path))
  const id = newInstanceId()
  await s1.insertInstance({
    id,
    template: 'rstudio',
    state: 'ready',
    ownerId: 'u1',
    keyName: 'k',
    tags: { a: '1' },
    lastActivityAt: 123,
  })
  await s1.openAssignment({ instanceId: id, template: 'rstudio', userId: 'u1', keyName: 'k', startedAt: 100 })
  await s1.insertKey({
    id: 'k1',
    name: 'admin',
    role: 'admin',
    hash: 'x'.repeat(64),
    createdAt: 1,
    revokedAt: null,
    lastUsedAt: null,
  })
  await s1.setMeta('installation', 'abc')
  const before = await s1.getInstance(id)
  await s1.close()
  await s1.close() // idempotent

  const raw = new BetterSqlite3(path, { readonly: true })
  try {
    assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal')
    const migrations = raw.prepare('select name from studiopool_migration').all() as { name: string }[]
    assert.deepEqual(
      migrations.map((m) => m.name),
      MIGRATION_NAMES,
    )
  } finally {
    raw.close()
  }

  const s2 = await createStore({ driver: 'sqlite', path }, { log, poolId: 'test' })
  try {
    assert.deepEqual(await s2.getInstance(id), before)
    assert.equal((await s2.listHistory({ open: true })).length, 1)
    assert.equal((await s2.getKey('k1'))?.name, 'admin')
    assert.equal(await s2.getMeta('installation'), 'abc')
    const raw2 = new BetterSqlite3(path, { readonly: true, fileMustExist: true })
    try {
      assert.equal(
        (raw2.prepare('select count(*) as n from studiopool_migration').get() as { n: number }).n,
        MIGRATION_NAMES.length,
        'each migration recorded once',
      )
    } finally {
      raw2.close()
    }
  } finally {
    await s2.close()
  }
})

test('sqlite: a write waits for another process holding the lock instead of failing', async () => {
  const path = join(dir, 'shared.db')
  const store = await createStore({ driver: 'sqlite', path }, { log, poolId: 'test' })
  // Another process takes the write lock (BEGIN IMMEDIATE) and holds it for a while.
  const holdMs = 400
  const child = spawn(
    process.execPath,
    [
      '-e',
      `
    const Database = require('better-sqlite3')
    const db = new Database(${JSON.stringify(path)})
    db.exec('begin immediate')
    db.prepare("insert into meta (key, value) values ('child', 'yes')").run()
    process.stdout.write('locked\\n')
    setTimeout(() => { db.exec('commit'); db.close(); process.exit(0) }, ${holdMs})
  `,
    ],
    { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] },
  )
  after(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  try {
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error('child never took the lock')), 10_000)
      child.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('locked')) {
          clearTimeout(deadline)
          resolve()
        }
      })
      child.on('exit', (code) => reject(new Error(`child exited early: ${code}`)))
    })
    const t0 = Date.now()
    // busy_timeout makes this wait (synchronously, better-sqlite3) until the child commits.
    const inserted = await store.withPoolLock(async (tx) => {
      const seen = await tx.getMeta('child')
      await tx.setMeta('parent', 'yes')
      return seen
    })
    const waited = Date.now() - t0
    assert.equal(inserted, 'yes', 'the child committed before our transaction began')
    assert.ok(waited >= holdMs / 4, `waited ${waited} ms`)
    assert.equal(await store.getMeta('parent'), 'yes')
  } finally {
    await store.close()
  }
})
