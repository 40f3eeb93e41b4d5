import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import BetterSqlite3 from 'better-sqlite3'
import { createStore } from '../../src/store/sql-store.js'
import { LIVE_SQL } from '../../src/store/rows.js'
import { plainParams } from '../../src/store/sqlite/plain-params.js'

const dir = mkdtempSync(join(tmpdir(), 'studiopool-plain-params-'))
after(() => rmSync(dir, { recursive: true, force: true }))

test('every placeholder outside quotes and comments becomes +?, nothing else changes', () => {
  assert.equal(plainParams('select 1'), 'select 1')
  assert.equal(
    plainParams('update t set a = ?, b = ? where id = ? and s in (?, ?) limit ?'),
    'update t set a = +?, b = +? where id = +? and s in (+?, +?) limit +?',
  )
  assert.equal(plainParams("select '?', 'it''s ?', ? from t"), "select '?', 'it''s ?', +? from t")
  assert.equal(plainParams('select "a?" , `b?`, [c?], ? from t'), 'select "a?" , `b?`, [c?], +? from t')
  assert.equal(plainParams('select ? -- what?\n, ? /* and? */ from t'), 'select +? -- what?\n, +? /* and? */ from t')
  assert.equal(plainParams('select +? from t'), 'select +? from t')
  // An unterminated quote is SQLite's error to report, not ours to change.
  assert.equal(plainParams("select 'open ?"), "select 'open ?")
})

test('a plain parameter binds the same values and compares with the same affinity', () => {
  const db = new BetterSqlite3(':memory:')
  try {
    db.exec('create table t (txt text, num integer, raw blob)')
    const insert = (sql: string) => db.prepare(plainParams(sql))
    insert('insert into t (txt, num, raw) values (?, ?, ?)').run('5', 5, Buffer.from([1, 2]))
    insert('insert into t (txt, num, raw) values (?, ?, ?)').run(null, 9007199254740991n, null)
    const rows = db.prepare('select txt, num, raw, typeof(txt) tt, typeof(num) tn from t order by rowid').all()
    assert.deepEqual(rows, [
      { txt: '5', num: 5, raw: Buffer.from([1, 2]), tt: 'text', tn: 'integer' },
      { txt: null, num: 9007199254740991, raw: null, tt: 'null', tn: 'integer' },
    ])
    // The column's affinity still applies to the parameter on the other side of `=`, as with a bare ?.
    for (const [sql, arg] of [
      ['select count(*) n from t where txt = ?', 5],
      ['select count(*) n from t where num = ?', '5'],
      ['select count(*) n from t where num in (?, ?)', '5'],
    ] as const) {
      const args = sql.includes('in (') ? [arg, 0] : [arg]
      assert.deepEqual(db.prepare(plainParams(sql)).get(...args), db.prepare(sql).get(...args), sql)
    }
  } finally {
    db.close()
  }
})

test("the warm claim's lookups still search their partial indexes with plain parameters", async () => {
  const path = join(dir, 'plan.db')
  const store = await createStore({ driver: 'sqlite', path }, { log: pino({ level: 'silent' }), poolId: 'default' })
  await store.close()
  const db = new BetterSqlite3(path)
  try {
    const plan = (sql: string, ...args: unknown[]) =>
      (db.prepare(`explain query plan ${plainParams(sql)}`).all(...args) as { detail: string }[])
        .map((r) => r.detail)
        .join(' | ')
    assert.match(
      plan(
        `select id from instances where template = ? and state = 'ready' and owner_id is null order by created_at, id limit 1`,
        'demo',
      ),
      /USING (COVERING )?INDEX instances_free_idx \(template=\? AND state=\?\)/,
    )
    assert.match(
      plan(
        `select * from instances where owner_id = ? and template = ? and state in (${LIVE_SQL}) limit 1`,
        'u',
        'demo',
      ),
      /USING INDEX instances_live_owner_uq \(owner_id=\? AND template=\?\)/,
    )
    assert.match(
      plan('select * from instances where id = ?', 'i-1'),
      /USING INDEX sqlite_autoindex_instances_1 \(id=\?\)/,
    )
  } finally {
    db.close()
  }
})
