/**
 * Paging of the REST lists (README "Paging", src/api/paging.ts), through the HTTP API on both stores
 * with 2,600 rows: totals, a walk over every page lists each row once, a walk stays right while rows
 * are inserted and deleted between its pages (keyset, not offset), refused cursors and limits have
 * their codes, the typed client's iterators follow the cursors, and the CLI lists past one page.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { newInstanceId, randomBase32 } from '../../src/domain/ids.js'
import { StudiopoolClient } from '../../src/client/index.js'
import { dropSchemas } from '../helpers/pg.js'
import { call, STORES, startServer, type TestServer } from './helpers.js'

after(dropSchemas)

const N = 2600
const T0 = Date.UTC(2026, 0, 5, 9)

interface Walk {
  readonly ids: string[]
  readonly totals: number[]
  readonly pages: number
}

/** Follows nextCursor from the first page to the last; `between` runs after each page. */
async function walk(
  s: TestServer,
  path: string,
  key: string,
  idOf: (row: any) => string,
  between?: (page: number) => Promise<void>,
): Promise<Walk> {
  const ids: string[] = []
  const totals: number[] = []
  let cursor: string | null = null
  let pages = 0
  do {
    const sep = path.includes('?') ? '&' : '?'
    const r = await call(s.url, 'GET', `${path}${cursor ? `${sep}cursor=${cursor}` : ''}`, { key: s.adminKey })
    assert.equal(r.status, 200, r.text)
    pages++
    ids.push(...(r.json[key] as unknown[]).map(idOf))
    totals.push(r.json.total as number)
    cursor = r.json.nextCursor as string | null
    const link = r.headers.link as string | undefined
    if (cursor) {
      assert.ok(link, 'a page with a next one says so in Link')
      const next = new URL(/^<([^>]*)>; rel="next"$/.exec(link)![1]!, `${s.url}${path}`)
      assert.equal(next.pathname, new URL(`${s.url}${path}`).pathname, 'Link keeps the path')
      assert.equal(next.searchParams.get('cursor'), cursor)
    } else assert.equal(link, undefined, 'the last page has no next link')
    if (between && cursor) await between(pages)
  } while (cursor)
  return { ids, totals, pages }
}

const once = (ids: readonly string[]) => assert.equal(new Set(ids).size, ids.length, 'no row listed twice')

for (const kind of STORES) {
  describe(`paging on ${kind}`, () => {
    let s: TestServer
    const live: string[] = []
    const ended: string[] = []

    before(async () => {
      s = await startServer(
        kind,
        `worker: { enabled: false }\ntemplates:\n  demo: { provider: fake, minFree: 0, fake: { address: 'http://127.0.0.1:9' } }\n  other: { provider: fake, minFree: 0, fake: { address: 'http://127.0.0.1:9' } }\n`,
      )
      await s.store.transaction(async (tx) => {
        for (let i = 0; i < N; i++) {
          const id = newInstanceId()
          live.push(id)
          await tx.insertInstance({
            id,
            template: i % 4 === 0 ? 'other' : 'demo',
            state: 'ready',
            ownerId: null,
            keyName: null,
            createdAt: T0 + i,
          })
          // Many assignments start in the same millisecond: the key's second column (id) orders them.
          await tx.openAssignment({
            instanceId: id,
            template: 'demo',
            userId: `u${i % 10}`,
            keyName: null,
            startedAt: T0 + Math.floor(i / 7) * 1000,
          })
        }
        for (let i = 0; i < 100; i++) {
          const id = newInstanceId()
          ended.push(id)
          await tx.insertInstance({ id, template: 'demo', state: 'terminated', ownerId: null, keyName: null })
        }
      })
    })
    after(() => s?.close())

    test('instances: the total, and a walk over every page lists each live instance exactly once', async () => {
      const first = await call(s.url, 'GET', '/api/v1/instances', { key: s.adminKey })
      assert.equal(first.status, 200)
      assert.equal(first.json.instances.length, 1000, 'the default page size')
      assert.equal(first.json.total, N, 'total counts every live instance, not the page')
      assert.equal(typeof first.json.nextCursor, 'string')
      const w = await walk(s, '/api/v1/instances?limit=700', 'instances', (i) => i.instanceId)
      assert.equal(w.pages, 4)
      once(w.ids)
      assert.deepEqual([...w.ids].sort(), [...live].sort())
      assert.deepEqual(new Set(w.totals), new Set([N]), 'every page carries the same total')
      const other = await walk(s, '/api/v1/instances?template=other&limit=300', 'instances', (i) => i.instanceId)
      assert.equal(other.ids.length, N / 4)
      assert.equal(other.totals[0], N / 4, 'the total follows the filters')
      const term = await call(s.url, 'GET', '/api/v1/instances?state=terminated&limit=10', { key: s.adminKey })
      assert.equal(term.json.total, ended.length)
      // Exactly a page's worth left: the last page says so (no cursor to an empty page).
      const exact = await call(s.url, 'GET', `/api/v1/instances?state=terminated&limit=${ended.length}`, {
        key: s.adminKey,
      })
      assert.equal(exact.json.instances.length, ended.length)
      assert.equal(exact.json.nextCursor, null)
    })

    test('instances: rows inserted and deleted between pages never make a row that stayed appear twice or not at all', async () => {
      const gone = new Set<string>()
      const added: string[] = []
      let k = 0
      const w = await walk(
        s,
        '/api/v1/instances?limit=400',
        'instances',
        (i) => i.instanceId,
        async () => {
          // Delete some rows (anywhere in the order: before and after the cursor) and add new ones.
          for (let j = 0; j < 15; j++) {
            const victim = live[(k++ * 97) % live.length]!
            if (gone.has(victim)) continue
            gone.add(victim)
            await s.store.deleteInstance(victim)
          }
          for (let j = 0; j < 40; j++) {
            const id = newInstanceId()
            added.push(id)
            await s.store.insertInstance({ id, template: 'demo', state: 'ready', ownerId: null, keyName: null })
          }
        },
      )
      once(w.ids)
      const seen = new Set(w.ids)
      const stayed = live.filter((id) => !gone.has(id))
      assert.deepEqual(
        stayed.filter((id) => !seen.has(id)),
        [],
        'every instance that existed for the whole walk was listed',
      )
      for (const id of w.ids) assert.ok(live.includes(id) || added.includes(id), 'only real rows')
      const now = await call(s.url, 'GET', '/api/v1/instances?limit=1', { key: s.adminKey })
      assert.equal(now.json.total, stayed.length + added.length, 'the total is the count now')
      // Put the fixture back for the other tests.
      for (const id of added) await s.store.deleteInstance(id)
      for (const id of gone) live.splice(live.indexOf(id), 1)
    })

    test('the queue: GET /api/v1/pool shows its length and the oldest 1,000; /api/v1/pool/queue pages all of it in order, positions per template', async () => {
      const queued: { id: string; template: string; createdAt: number }[] = []
      await s.store.transaction(async (tx) => {
        for (let i = 0; i < 1200; i++) {
          // Three rows per millisecond: the key's id column orders the ties.
          const row = {
            id: newInstanceId(),
            template: i % 3 === 0 ? 'other' : 'demo',
            createdAt: T0 + Math.floor(i / 3),
          }
          queued.push(row)
          await tx.insertInstance({ ...row, state: 'queued', ownerId: `q${i}`, keyName: null })
        }
      })
      try {
        const order = [...queued].sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1))
        const pool = await call(s.url, 'GET', '/api/v1/pool', { key: s.adminKey })
        assert.equal(pool.status, 200)
        assert.equal(pool.json.queueLength, 1200)
        assert.equal(pool.json.queue.length, 1000, 'the oldest 1,000')
        assert.deepEqual(
          pool.json.queue.map((q: { instanceId: string }) => q.instanceId),
          order.slice(0, 1000).map((q) => q.id),
        )
        const w = await walk(s, '/api/v1/pool/queue?limit=500', 'queue', (q) => q.instanceId)
        assert.equal(w.pages, 3)
        assert.deepEqual(
          w.ids,
          order.map((q) => q.id),
          'every queued row once, oldest first',
        )
        assert.deepEqual(new Set(w.totals), new Set([1200]))
        // Positions are within the template, as GET_STATUS says them.
        const page = await call(s.url, 'GET', '/api/v1/pool/queue?template=other&limit=300', { key: s.adminKey })
        assert.equal(page.json.total, 400)
        const next = await call(
          s.url,
          'GET',
          `/api/v1/pool/queue?template=other&limit=300&cursor=${page.json.nextCursor}`,
          {
            key: s.adminKey,
          },
        )
        const rows = [...page.json.queue, ...next.json.queue] as {
          instanceId: string
          position: number
          template: string
        }[]
        assert.deepEqual(
          rows.map((r) => r.position),
          rows.map((_, i) => i + 1),
        )
        for (const r of [rows[0]!, rows[299]!, rows[300]!, rows[399]!])
          assert.equal(r.position, await s.store.queuePosition(r.instanceId))
        const mixed = await call(s.url, 'GET', '/api/v1/pool/queue?limit=1000', { key: s.adminKey })
        for (const r of (mixed.json.queue as typeof rows).filter((_, i) => i % 97 === 0))
          assert.equal(r.position, await s.store.queuePosition(r.instanceId), 'per template on a mixed page too')
        // A cursor of another list, or of other filters, is refused with its code.
        const inst = await call(s.url, 'GET', '/api/v1/instances?limit=1', { key: s.adminKey })
        const wrong = await call(s.url, 'GET', `/api/v1/pool/queue?cursor=${inst.json.nextCursor}`, { key: s.adminKey })
        assert.equal(wrong.status, 400)
        assert.equal(wrong.json.error.code, 'INVALID_CURSOR')
        const other = await call(s.url, 'GET', `/api/v1/pool/queue?template=demo&cursor=${page.json.nextCursor}`, {
          key: s.adminKey,
        })
        assert.equal(other.status, 400)
        const big = await call(s.url, 'GET', '/api/v1/pool/queue?limit=1001', { key: s.adminKey })
        assert.equal(big.status, 400)
        // The typed client walks it all.
        const client = new StudiopoolClient({ url: s.url, key: s.adminKey })
        const seen: string[] = []
        for await (const r of client.eachQueued({ limit: 250 })) seen.push(r.instanceId)
        assert.deepEqual(
          seen,
          order.map((q) => q.id),
        )
      } finally {
        for (const q of queued) await s.store.deleteInstance(q.id)
      }
    })

    test('history: newest first, every assignment once across pages (ties on startedAt included), totals by filter', async () => {
      const w = await walk(s, '/api/v1/history?limit=1000', 'history', (a) => String(a.id))
      assert.equal(w.pages, 3)
      once(w.ids)
      assert.equal(w.ids.length, N)
      assert.deepEqual(new Set(w.totals), new Set([N]))
      const page = await call(s.url, 'GET', '/api/v1/history?limit=50', { key: s.adminKey })
      const starts = (page.json.history as { startedAt: string }[]).map((a) => Date.parse(a.startedAt))
      assert.deepEqual(
        starts,
        [...starts].sort((a, b) => b - a),
        'newest first',
      )
      const u3 = await walk(s, '/api/v1/history?userId=u3&limit=100', 'history', (a) => String(a.id))
      assert.equal(u3.ids.length, N / 10)
      assert.equal(u3.totals[0], N / 10)
      // Newer and older assignments added mid-walk: the rows that were there are each listed once.
      const mid = await walk(
        s,
        '/api/v1/history?limit=600',
        'history',
        (a) => String(a.id),
        async (n) => {
          for (let j = 0; j < 20; j++)
            await s.store.openAssignment({
              instanceId: `mid-${n}-${j}-${randomBase32(6)}`,
              template: 'demo',
              userId: 'late',
              keyName: null,
              startedAt: j % 2 ? Date.now() : T0 + j * 1000,
            })
        },
      )
      once(mid.ids)
      const seen = new Set(mid.ids)
      assert.ok(
        w.ids.every((id) => seen.has(id)),
        'every assignment that was there before the walk was listed',
      )
    })

    test('audit, webhook deliveries and keys page the same way', async () => {
      await s.store.audit(
        Array.from({ length: 600 }, (_, i) => ({
          at: T0 + i,
          instanceId: live[i % 3]!,
          event: 'paging-test',
          actor: 'test',
          detail: { i },
        })),
      )
      for (let i = 0; i < 250; i++)
        await s.store.webhooks.enqueue(['nowhere'], { id: `ev-${i}`, type: 'session.ready', body: '{}' }, T0 + i)
      for (let i = 0; i < 120; i++)
        await s.store.insertKey({
          id: randomBase32(12),
          name: `paging-${i}`,
          role: 'requester',
          hash: randomBase32(40),
          createdAt: T0 + (i % 30),
          revokedAt: null,
          lastUsedAt: null,
        })
      const audit = await walk(s, `/api/v1/audit?instanceId=${live[1]}&limit=75`, 'events', (e) => String(e.id))
      once(audit.ids)
      assert.equal(audit.ids.length, 200)
      assert.equal(audit.totals[0], 200)
      const del = await walk(s, '/api/v1/webhooks/deliveries?webhook=nowhere&limit=100', 'deliveries', (d) =>
        String(d.seq),
      )
      once(del.ids)
      assert.equal(del.ids.length, 250)
      assert.equal(del.pages, 3)
      assert.equal(del.totals[0], 250)
      const keys = await walk(s, '/api/v1/keys?limit=50', 'keys', (k) => k.id)
      once(keys.ids)
      const all = await s.store.listKeys()
      assert.equal(keys.ids.length, all.length, 'every key, the bootstrap admin key included')
      assert.equal(keys.totals[0], all.length)
    })

    test('refused: a garbled or forged cursor (400 INVALID_CURSOR), a limit of 0 or over the maximum (400 INVALID_REQUEST)', async () => {
      const page = await call(s.url, 'GET', '/api/v1/instances?limit=5', { key: s.adminKey })
      const cursor = page.json.nextCursor as string
      const historyCursor = (await call(s.url, 'GET', '/api/v1/history?limit=5', { key: s.adminKey })).json.nextCursor
      const forged = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
      const bad: [string, string][] = [
        ['garbage', '/api/v1/instances?cursor=%21%21not-base64'],
        ['truncated', `/api/v1/instances?cursor=${cursor.slice(0, 11)}`],
        ['not JSON', `/api/v1/instances?cursor=${Buffer.from('hello').toString('base64url')}`],
        ['another list', `/api/v1/instances?cursor=${historyCursor}`],
        ['other filters', `/api/v1/instances?template=other&cursor=${cursor}`],
        ['wrong key shape', `/api/v1/history?cursor=${forged({ l: 'history', f: 'x', k: ['a'] })}`],
        ['a JSON array', `/api/v1/audit?cursor=${forged([1, 2])}`],
      ]
      for (const [why, path] of bad) {
        const r = await call(s.url, 'GET', path, { key: s.adminKey })
        assert.equal(r.status, 400, `${why}: ${r.text}`)
        assert.equal(r.json.error.code, 'INVALID_CURSOR', why)
        assert.equal(r.json.error.details[0].path, '/querystring/cursor')
      }
      for (const path of [
        '/api/v1/instances?limit=10001',
        '/api/v1/instances?limit=0',
        '/api/v1/history?limit=10001',
        '/api/v1/audit?limit=5001',
        '/api/v1/keys?limit=1001',
        '/api/v1/webhooks/deliveries?limit=1001',
      ]) {
        const r = await call(s.url, 'GET', path, { key: s.adminKey })
        assert.equal(r.status, 400, `${path}: ${r.text}`)
        assert.equal(r.json.error.code, 'INVALID_REQUEST')
        assert.equal(r.json.error.details[0].path, '/querystring/limit')
        assert.match(r.json.error.message, /between 1 and \d+/)
      }
      const mixed = await call(s.url, 'GET', `/api/v1/history?offset=5&cursor=${historyCursor}`, { key: s.adminKey })
      assert.equal(mixed.status, 400)
      assert.equal(mixed.json.error.code, 'INVALID_REQUEST')
      const max = await call(s.url, 'GET', '/api/v1/instances?limit=10000', { key: s.adminKey })
      assert.equal(max.status, 200, 'the maximum itself is allowed')
    })

    test('the typed client walks every page: eachInstance, eachAssignment, pages', async () => {
      const c = new StudiopoolClient({ url: s.url, key: s.adminKey })
      const ids: string[] = []
      for await (const i of c.eachInstance()) ids.push(i.instanceId)
      once(ids)
      assert.deepEqual([...ids].sort(), [...live].sort(), 'past the first page of 1,000')
      let n = 0
      for await (const a of c.eachAssignment({ userId: 'u7', limit: 60 })) if (a.userId === 'u7') n++
      assert.equal(n, N / 10)
      const sizes: number[] = []
      for await (const p of c.pages<unknown>('/api/v1/instances', 'instances', { template: 'other', limit: 250 }))
        sizes.push((p.instances as unknown[]).length)
      const others = (await c.listInstances({ template: 'other', limit: 1 })).total
      assert.ok(others > 500 && others <= N / 4)
      assert.deepEqual(sizes, [250, 250, others - 500], 'full pages, then the rest')
      const one = await c.listInstances({ limit: 2 })
      assert.equal(one.instances.length, 2)
      assert.equal(one.total, live.length)
      const next = await c.listInstances({ limit: 2, cursor: one.nextCursor! })
      assert.notDeepEqual(
        next.instances.map((i) => i.instanceId),
        one.instances.map((i) => i.instanceId),
      )
    })

    if (kind === 'sqlite')
      test("the README's paging example runs as written and reads the first two pages", async () => {
        const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
        const at = readme.indexOf('### Paging')
        const open = readme.indexOf('```sh\n', at) + 6
        const script = readme.slice(open, readme.indexOf('\n```', open))
        const child = spawn('sh', ['-e', '-c', script], { env: { ...process.env, URL: s.url, KEY: s.adminKey } })
        let out = ''
        child.stdout.on('data', (c) => (out += String(c)))
        const code = await new Promise<number | null>((r) => child.on('close', r))
        assert.equal(code, 0)
        assert.match(out, /^link: <\?state=ready&limit=2&cursor=[A-Za-z0-9_-]+>; rel="next"\r?$/im)
        const bodies = out
          .split(/\r?\n/)
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l))
        assert.equal(bodies.length, 2, 'the first page, then the second')
        assert.equal(bodies[0].total, live.length)
        const [p1, p2] = bodies.map((b) => b.instances.map((i: { instanceId: string }) => i.instanceId))
        assert.equal(p1.length + p2.length, 4)
        assert.equal(new Set([...p1, ...p2]).size, 4, 'the second page goes on after the first')
      })

    if (kind === 'sqlite')
      test('the CLI lists every instance past one page (status) and every assignment (history -n 0)', async () => {
        const run = async (...args: string[]) => {
          const child = spawn(
            process.execPath,
            [new URL('../../bin/studiopool.js', import.meta.url).pathname, ...args, '--url', s.url],
            { env: { ...process.env, STUDIOPOOL_KEY: s.adminKey } },
          )
          let out = ''
          let err = ''
          child.stdout.on('data', (c) => (out += String(c)))
          child.stderr.on('data', (c) => (err += String(c)))
          const code = await new Promise<number | null>((r) => child.on('close', r))
          assert.equal(code, 0, err)
          return out
        }
        const cli = async (...args: string[]) => JSON.parse(await run(...args, '--json'))
        const status = await cli('status')
        assert.equal(status.instances.length, live.length, 'the CLI went past the first page of 1,000')
        once(status.instances.map((i: { instanceId: string }) => i.instanceId))
        const history = await cli('history', '-n', '0')
        assert.ok(history.history.length >= N, 'every assignment')
        const some = await cli('history', '-n', '1234')
        assert.equal(some.history.length, 1234, '-n is the number of rows, over several pages')
        const csv = (await run('history', '--csv', '-n', '1500')).split('\r\n').filter(Boolean)
        assert.equal(csv[0]!.split(',')[0], 'id', 'one header line')
        assert.equal(csv.length, 1501, 'the CSV follows the Link header to a second page')
        assert.equal(new Set(csv).size, 1501)
      })
  })
}
