/**
 * Upgrades (issue 16, docs/ha.md "Upgrades") with the real binary: `studiopool migrate --dry-run`
 * lists what a new store needs, `studiopool migrate` applies it once, and `studiopool serve` on a
 * store whose schema is newer than the release refuses to start, exit 2, saying why.
 */
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { pgClientConfig } from '../../src/store/dialects.js'
import { KNOWN_MIGRATIONS } from '../../src/store/migrations/index.js'
import { BIN, DEMO_APP } from '../helpers/server-process.js'
import { dropSchemas, freshPgUrl, PG_SKIP } from '../helpers/pg.js'

const dir = mkdtempSync(join(tmpdir(), 'sp-migrate-'))
after(async () => {
  await dropSchemas()
  rmSync(dir, { recursive: true, force: true })
})

const run = (...args: string[]) =>
  spawnSync(process.execPath, [BIN, ...args, '--config', join(dir, 'studiopool.yaml')], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', HOME: dir, STUDIOPOOL_LOG_LEVEL: 'warn' },
    encoding: 'utf8',
    timeout: 60_000,
  })

test(
  'studiopool migrate applies pending migrations once; serve refuses a schema newer than itself',
  { skip: PG_SKIP ? 'STUDIOPOOL_SKIP_PG=1' : false },
  async () => {
    const url = await freshPgUrl()
    writeFileSync(
      join(dir, 'studiopool.yaml'),
      `server:\n  dataDir: ${JSON.stringify(join(dir, 'data'))}\nstore:\n  driver: postgres\n  url: ${JSON.stringify(url)}\ntemplates:\n  demo:\n    provider: local\n    local:\n      command: [node, ${JSON.stringify(DEMO_APP)}, --port, "{{port}}"]\n`,
    )
    const dry = run('migrate', '--dry-run')
    assert.equal(dry.status, 0, dry.stderr)
    assert.match(dry.stdout, new RegExp(`pending: ${KNOWN_MIGRATIONS.join(', ')} \\(the store is at no schema\\)`))
    const applied = run('migrate')
    assert.equal(applied.status, 0, applied.stderr)
    assert.match(applied.stdout, new RegExp(`the store is at ${KNOWN_MIGRATIONS.at(-1)}`))
    const again = run('migrate')
    assert.match(again.stdout, /applied none/, 'a second run has nothing to do')

    const c = new pg.Client({ connectionString: pgClientConfig(url).connectionString })
    await c.connect()
    await c.query(`insert into studiopool_migration (name, timestamp) values ('9999-newer', now()::text)`)
    await c.end()
    const serve = run('serve', '--port', '0')
    assert.equal(serve.status, 2, `${serve.stdout}\n${serve.stderr}`)
    assert.match(serve.stderr, /refusing to start: the store's schema is newer than this release.*9999-newer/)
    assert.doesNotMatch(serve.stderr, /\n\s+at /, 'no stack trace')
  },
)
