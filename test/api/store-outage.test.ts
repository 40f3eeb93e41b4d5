/**
 * Store outages (issue 9 item 4), with the real binary over real sockets, the faults injected the
 * way they were found:
 * - Postgres frozen (every process of the test's own cluster SIGSTOPped), then stopped: the API
 *   answers 503 STORE_UNAVAILABLE with Retry-After within the configured timeouts, /readyz answers
 *   503 with its reason quickly, an established session keeps working through the gateway (proxying
 *   never awaits the store), and the server logs no 500 and no stack.
 * - SQLite on a full disk (a small tmpfs mounted by the test): writes answer 503 STORE_UNAVAILABLE,
 *   /readyz answers 503 naming the disk; once space is freed, writes work again.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { startOwnPostgres, postgresBinDir, type OwnPostgres } from '../helpers/own-postgres.js'
import { api, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'
import { startAppStub } from './helpers.js'

const ARENA = 'outage-requester-key-0123456789'

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now()
  const value = await fn()
  return { value, ms: performance.now() - t0 }
}

async function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  const r = await request(url, { headers, headersTimeout: 30_000 })
  return { status: r.statusCode, headers: r.headers, text: await r.body.text() }
}

/** Requests a session, waits until it is ready, redeems the launch URL and returns the cookie and the session URL. */
async function openSession(s: ServerProcess, userId: string): Promise<{ cookie: string; sessionUrl: string }> {
  const grant = await api(s.url, ARENA, 'POST', '/api/v1/sessions', { userId })
  assert.equal(grant.status, grant.body.state === 'ready' ? 200 : 202, JSON.stringify(grant.body))
  const id = grant.body.instanceId as string
  await waitFor(
    'session ready',
    async () =>
      (await api(s.url, ARENA, 'GET', `/api/v1/instances/${id}?userId=${userId}`)).body.instance?.state === 'ready',
    20_000,
  )
  const launch = await request(grant.body.url as string)
  await launch.body.dump()
  assert.equal(launch.statusCode, 302)
  const cookie = String(launch.headers['set-cookie']).split(';')[0]!
  const sessionUrl = new URL(String(launch.headers.location), s.url).href
  const page = await get(sessionUrl, { cookie })
  assert.equal(page.status, 200, page.text)
  return { cookie, sessionUrl }
}

function assertCleanLogs(out: string): void {
  assert.doesNotMatch(out, /INTERNAL|unhandled error/, 'no 500 INTERNAL')
  assert.doesNotMatch(out, /"stack":"[^"]|\n\s+at .*:\d+:\d+/, 'no stack trace in the logs')
}

describe(
  'store outages: Postgres frozen and stopped',
  { skip: postgresBinDir() ? undefined : 'no Postgres binaries' },
  () => {
    let pgc: OwnPostgres
    let appStub: Awaited<ReturnType<typeof startAppStub>>
    let s: ServerProcess
    const dir = mkdtempSync(join(tmpdir(), 'sp-outage-pg-'))

    before(async () => {
      pgc = await startOwnPostgres()
      appStub = await startAppStub()
      s = await spawnServer({
        cwd: dir,
        env: { ARENA_POOL_SERVICE_KEY: ARENA },
        config: `store:
  driver: postgres
  url: ${JSON.stringify(pgc.url)}
  poolSize: 4
  connectTimeout: 1s
  statementTimeout: 1s
  queryTimeout: 1500ms
server: { dataDir: ${JSON.stringify(join(dir, 'data'))} }
worker: { interval: 1s }
templates:
  demo:
    provider: fake
    fake: { address: ${JSON.stringify(appStub.url)} }
`,
      })
    })
    after(async () => {
      await s?.kill()
      await pgc?.destroy()
      await appStub?.close()
      rmSync(dir, { recursive: true, force: true })
    })

    // "Fast" is bounded by the configured timeouts (1 s connect, 1.5 s read, /readyz's 2 s), with room
    // for a loaded machine; without timeouts these calls hung for as long as Postgres was frozen.
    test('frozen: 503 STORE_UNAVAILABLE fast, /readyz 503 fast, the session still served; stopped: the same', async () => {
      const { cookie, sessionUrl } = await openSession(s, 'alice')
      assert.equal((await get(`${s.url}/readyz`)).status, 200)

      pgc.signalAll('SIGSTOP')
      try {
        const page = await timed(() => get(sessionUrl, { cookie }))
        assert.equal(page.value.status, 200, 'the established session is proxied while Postgres is frozen')
        assert.ok(page.ms < 1000, `proxying took ${page.ms} ms`)

        const ready = await timed(() => get(`${s.url}/readyz`))
        assert.equal(ready.value.status, 503, ready.value.text)
        assert.match(JSON.parse(ready.value.text).checks.store, /failing/)
        assert.ok(ready.ms < 4500, `/readyz took ${ready.ms} ms`)

        const call = await timed(() => api(s.url, ARENA, 'POST', '/api/v1/sessions', { userId: 'bob' }))
        assert.equal(call.value.status, 503, JSON.stringify(call.value.body))
        assert.equal(call.value.body.error.code, 'STORE_UNAVAILABLE')
        assert.ok(call.ms < 8000, `the API call took ${call.ms} ms`)
        const withHeader = await request(`${s.url}/api/v1/templates`, { headers: { authorization: `Bearer ${ARENA}` } })
        const withHeaderText = await withHeader.body.text()
        assert.equal(withHeader.statusCode, 503, withHeaderText)
        assert.match(String(withHeader.headers['retry-after']), /^\d+$/)
      } finally {
        pgc.signalAll('SIGCONT')
      }
      // Back: the API answers again without a restart.
      await waitFor(
        'the API after SIGCONT',
        async () => (await api(s.url, ARENA, 'GET', '/api/v1/templates')).status === 200,
        20_000,
      )

      await pgc.stop()
      const call = await timed(() => api(s.url, ARENA, 'POST', '/api/v1/sessions', { userId: 'carol' }))
      assert.equal(call.value.status, 503, JSON.stringify(call.value.body))
      assert.equal(call.value.body.error.code, 'STORE_UNAVAILABLE')
      assert.ok(call.ms < 4000, `the API call took ${call.ms} ms`)
      const ready = await get(`${s.url}/readyz`)
      assert.equal(ready.status, 503)
      assert.equal(
        (await get(sessionUrl, { cookie })).status,
        200,
        'the established session is proxied while Postgres is down',
      )
      // A burst of requests while down: all 503, and the outage is logged once, without stacks.
      for (let i = 0; i < 20; i++) assert.equal((await api(s.url, ARENA, 'GET', '/api/v1/templates')).status, 503)
      assertCleanLogs(s.output())
      assert.ok(
        (s.output().match(/store unavailable/g) ?? []).length <= 4,
        `the outage was logged ${(s.output().match(/store unavailable/g) ?? []).length} times`,
      )
    })
  },
)

describe(
  'store outages: SQLite on a full disk',
  { skip: process.getuid?.() === 0 ? undefined : 'needs root to mount a tmpfs' },
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'sp-outage-full-'))
    const mnt = join(dir, 'mnt')
    let mounted = false
    let s: ServerProcess
    let adminKey = ''

    before(async () => {
      mkdirSync(mnt)
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt])
      mounted = true
      s = await spawnServer({
        cwd: dir,
        config: `store: { driver: sqlite, path: ${JSON.stringify(join(mnt, 'studiopool.db'))} }
server: { dataDir: ${JSON.stringify(join(dir, 'data'))} }
worker: { enabled: false }
templates:
  demo:
    provider: fake
`,
      })
      adminKey = s.adminKey!
    })
    after(async () => {
      await s?.kill()
      if (mounted) execFileSync('umount', [mnt])
      rmSync(dir, { recursive: true, force: true })
    })

    test('writes answer 503 STORE_UNAVAILABLE with Retry-After, /readyz 503; freed space works again', async () => {
      assert.equal(
        (await api(s.url, adminKey, 'POST', '/api/v1/keys', { name: 'before', role: 'requester' })).status,
        201,
      )
      assert.equal((await get(`${s.url}/readyz`)).status, 200)
      // Fill the disk to the last byte.
      const filler = join(mnt, 'filler')
      const fd = openSync(filler, 'w')
      for (const size of [1 << 20, 1 << 16, 1 << 12, 512, 1]) {
        const buf = Buffer.alloc(size, 1)
        try {
          for (;;) writeSync(fd, buf)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
        }
      }
      closeSync(fd)

      const statuses: number[] = []
      for (let i = 0; i < 5; i++) {
        const r = await request(`${s.url}/api/v1/keys`, {
          method: 'POST',
          headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `full-${i}`, role: 'requester' }),
        })
        const body = (await r.body.json()) as { error?: { code: string } }
        statuses.push(r.statusCode)
        if (r.statusCode === 503) {
          assert.equal(body.error?.code, 'STORE_UNAVAILABLE')
          assert.match(String(r.headers['retry-after']), /^\d+$/)
        } else assert.equal(r.statusCode, 201, JSON.stringify(body))
      }
      assert.ok(statuses.includes(503), `statuses on a full disk: ${statuses}`)
      const ready = await get(`${s.url}/readyz`)
      assert.equal(ready.status, 503, ready.text)
      assert.match(JSON.parse(ready.text).checks.store, /disk full/)

      unlinkSync(filler)
      const after = await api(s.url, adminKey, 'POST', '/api/v1/keys', { name: 'after', role: 'requester' })
      assert.equal(after.status, 201, JSON.stringify(after.body))
      assertCleanLogs(s.output())
    })
  },
)
