import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import BetterSqlite3 from 'better-sqlite3'
import { createStore } from '../../src/store/sql-store.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { CHECKPOINT_PAGES, FALLBACK_PAGES, startCheckpointer } from '../../src/store/sqlite/checkpointer.js'
import { waitFor } from '../helpers/wait.js'

const dir = mkdtempSync(join(tmpdir(), 'studiopool-sqlite-ckpt-'))
after(() => rmSync(dir, { recursive: true, force: true }))
const log = pino({ level: 'silent' })

/** The WAL's frames and how many of them are in the database file, read from a connection of the test's own. */
function walStatus(path: string): { log: number; checkpointed: number } {
  const db = new BetterSqlite3(path)
  try {
    return (db.pragma('wal_checkpoint(NOOP)') as { log: number; checkpointed: number }[])[0]!
  } finally {
    db.close()
  }
}

/** Writes claims' worth of rows in transactions of 25 until the WAL holds more than `pages` frames. */
async function fillWal(store: Awaited<ReturnType<typeof createStore>>, path: string, pages: number): Promise<void> {
  let i = 0
  while (walStatus(path).log <= pages) {
    await store.transaction(async (tx) => {
      for (let k = 0; k < 25; k++, i++)
        await tx.insertInstance({
          id: newInstanceId(),
          template: 'demo',
          state: 'ready',
          ownerId: `user-${i}`,
          keyName: 'k',
          tags: { pad: 'x'.repeat(200) },
        })
    })
  }
}

test('sqlite with background checkpoints: a thread of its own copies a full WAL into the database, the commits do not', async () => {
  const path = join(dir, 'server.db')
  const store = await createStore({ driver: 'sqlite', path }, { log, poolId: 'test', backgroundCheckpoints: true })
  try {
    await fillWal(store, path, CHECKPOINT_PAGES)
    // The worker thread checkpointed it: every frame copied, and the next write starts the WAL over.
    await waitFor('the WAL checkpointed', () => {
      const s = walStatus(path)
      return s.log > 0 && s.checkpointed === s.log
    })
    await store.setMeta('after', 'x')
    await waitFor('the WAL started over', () => walStatus(path).log < CHECKPOINT_PAGES / 2)
    assert.equal(await store.getMeta('after'), 'x')
  } finally {
    await store.close()
  }
  // Everything written is in the database after close (the checkpoint thread's connection closed first).
  const raw = new BetterSqlite3(path, { readonly: true })
  try {
    assert.ok((raw.prepare('select count(*) as n from instances').get() as { n: number }).n > 100)
  } finally {
    raw.close()
  }
})

test("sqlite without background checkpoints (a store that is not the server's): the committing connection checkpoints, as SQLite does", async () => {
  const path = join(dir, 'cli.db')
  const store = await createStore({ driver: 'sqlite', path }, { log, poolId: 'test' })
  try {
    await fillWal(store, path, CHECKPOINT_PAGES)
    // The commit that passed 1,000 pages checkpointed in place; nothing else runs one.
    const s = walStatus(path)
    assert.equal(s.checkpointed, s.log, 'the automatic checkpoint copied the WAL')
  } finally {
    await store.close()
  }
})

test('the checkpoint thread: the main connection checkpoints only far behind, the thread runs each checkpoint, and stops on close', async () => {
  const path = join(dir, 'raw.db')
  const main = new BetterSqlite3(path)
  main.pragma('journal_mode = WAL')
  main.pragma('synchronous = NORMAL')
  main.exec('create table t (id integer primary key, pad text)')
  const ck = startCheckpointer(path, main)
  try {
    assert.equal(main.pragma('wal_autocheckpoint', { simple: true }), FALLBACK_PAGES)
    const insert = main.prepare('insert into t (pad) values (?)')
    const batch = main.transaction(() => {
      for (let k = 0; k < 50; k++) insert.run('x'.repeat(2000))
    })
    while (walStatus(path).log <= CHECKPOINT_PAGES) batch()
    await waitFor('a checkpoint by the thread', () => ck.checkpoints > 0)
    const s = walStatus(path)
    assert.equal(s.checkpointed, s.log, 'every frame copied by the thread')
  } finally {
    await ck.close()
    main.close()
  }
})
