/**
 * Shared app pools, per-request routing (issue 14 "Must show"): a real R plumber API (seed 002's
 * backend shape: a PNG plot and a CSV table per request) on three instances behind `/a/api/`.
 * Requests are spread by least outstanding requests; under ~200 requests/s every request is
 * answered correctly; one instance killed mid-load → idempotent requests are retried once on
 * another instance, a POST caught on the dying instance fails with 502 UPSTREAM_FAILED, nothing
 * is lost silently, and the pool replaces the instance.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import { e2eSkipReason } from '../e2e/harness.js'
import { waitFor } from '../helpers/wait.js'
import { fetchLogin } from '../web/helpers.js'
import { census, plumberCommand, startSharedServer, type SharedServer } from './harness.js'

const skip = e2eSkipReason()
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47])

interface Outcome {
  readonly path: string
  readonly method: string
  readonly status: number
  readonly body: Buffer
  readonly error?: string
}

describe('shared plumber API, per-request routing', { skip }, () => {
  let s: SharedServer
  let cookie: string
  const agent = new Agent({ connections: 256 })

  before(async () => {
    s = await startSharedServer({
      api: {
        mode: 'shared',
        routing: 'per-request',
        provider: 'local',
        minInstances: 3,
        maxInstances: 3,
        maxConnectionsPerInstance: 8,
        loadFactor: 1,
        queueSize: 500,
        queueTimeout: '20s',
        idleTimeout: 0,
        maxLifetime: 0,
        startTimeout: '1m',
        pathMode: 'strip',
        healthPath: '/pid',
        local: { command: plumberCommand, stopGrace: '2s' },
      },
    })
    cookie = await fetchLogin(s.url, 'analyst')
    await waitFor('3 ready instances', async () => census(await s.shared('api')).ready === 3, 90_000)
  })

  after(async () => {
    await agent.close()
    await s?.close()
  })

  async function call(path: string, method: 'GET' | 'POST' = 'GET'): Promise<Outcome> {
    try {
      const res = await request(`${s.url}/a/api${path}`, { method, headers: { cookie }, dispatcher: agent })
      return { path, method, status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()) }
    } catch (err) {
      return { path, method, status: 0, body: Buffer.alloc(0), error: (err as Error).message }
    }
  }

  /** `count` requests paced at `perSecond` (the load's shape, not a wait for a condition). */
  async function load(count: number, perSecond: number, pick: (i: number) => [string, 'GET' | 'POST']) {
    const t0 = performance.now()
    const all: Promise<Outcome>[] = []
    for (let i = 0; i < count; i++) {
      const due = t0 + (i * 1000) / perSecond
      const wait = due - performance.now()
      if (wait > 1) await new Promise((r) => setTimeout(r, wait))
      const [path, method] = pick(i)
      all.push(call(path, method))
    }
    const sent = (performance.now() - t0) / 1000
    const out = await Promise.all(all)
    return { out, sent, seconds: (performance.now() - t0) / 1000 }
  }

  test('requests go to the instance with the fewest in flight', async () => {
    // 6 slow requests at once on 3 instances: least outstanding gives each instance 2 (plumber
    // answers one at a time, so none finishes before the last has been sent).
    const out = await Promise.all(Array.from({ length: 6 }, () => call('/slow?ms=3000')))
    const per = new Map<string, number>()
    for (const o of out) {
      assert.equal(o.status, 200, o.body.toString())
      const pid = (JSON.parse(o.body.toString()) as { pid: string }).pid
      per.set(pid, (per.get(pid) ?? 0) + 1)
    }
    assert.deepEqual([...per.values()], [2, 2, 2], `spread: ${JSON.stringify([...per])}`)
  })

  test('under ~200 requests/s every PNG and CSV is answered and correct', async () => {
    const { out, sent } = await load(600, 200, (i) => [
      i % 10 === 0 ? `/plot.png?n=${(i % 50) + 2}` : `/table.csv?n=${(i % 7) + 1}`,
      'GET',
    ])
    const bad = out.filter((o) => o.status !== 200)
    assert.equal(
      bad.length,
      0,
      `failed: ${JSON.stringify(bad.slice(0, 3).map((o) => [o.status, o.error, o.body.toString().slice(0, 200)]))}`,
    )
    for (const o of out) {
      if (o.path.startsWith('/plot.png')) assert.ok(o.body.subarray(0, 4).equals(PNG), 'a PNG')
      else {
        const n = Number(/n=(\d+)/.exec(o.path)![1])
        const lines = o.body.toString().trim().split('\n')
        assert.equal(lines[0], 'i,square')
        assert.equal(lines.length, n + 1)
        assert.equal(lines[n], `${n},${n * n}`)
      }
    }
    assert.ok(out.length / sent > 150, `offered ${Math.round(out.length / sent)} requests/s`)
  })

  // A retry re-forwards the same request: its header list must be built afresh from the client's
  // fields (test/gateway/request-headers.test.ts), or undici refuses the second Host and the GET is a 502.
  test('an instance killed mid-load: GETs retried once elsewhere, POSTs on it fail clearly, none lost', async () => {
    const before = await s.shared('api')
    const victim = before.instances.find((i) => i.state === 'ready')!.id
    const pids = s.pids(victim)
    assert.ok(pids.length > 0, 'the victim has processes')
    let killed = false
    const running = load(500, 150, (i) => {
      if (i === 150) {
        for (const pid of pids) process.kill(pid, 'SIGKILL')
        killed = true
      }
      return i % 3 === 0 ? ['/jobs?ms=400', 'POST'] : [`/table.csv?n=3`, 'GET']
    })
    const { out } = await running
    assert.ok(killed)
    const gets = out.filter((o) => o.method === 'GET')
    const posts = out.filter((o) => o.method === 'POST')
    // Every GET answered (the ones caught on the dying instance were retried on another).
    const badGets = gets.filter((o) => o.status !== 200)
    assert.equal(
      badGets.length,
      0,
      JSON.stringify(badGets.slice(0, 3).map((o) => [o.status, o.error, o.body.toString().slice(0, 300)])),
    )
    // Every POST either succeeded or failed with the documented error; none vanished or hung.
    const lost = posts.filter((o) => o.status !== 200 && o.status !== 502)
    assert.equal(lost.length, 0, JSON.stringify(lost.slice(0, 3).map((o) => [o.status, o.error])))
    const failed = posts.filter((o) => o.status === 502)
    assert.ok(failed.length >= 1, 'POSTs in flight on the killed instance failed')
    for (const f of failed) {
      const e = JSON.parse(f.body.toString()) as { error: { code: string; message: string } }
      assert.equal(e.error.code, 'UPSTREAM_FAILED')
      assert.match(e.error.message, /not idempotent/)
    }
    // The pool replaces the instance.
    await waitFor(
      'a replacement instance',
      async () => {
        const x = await s.shared('api')
        return census(x).ready === 3 && !x.instances.some((i) => i.id === victim)
      },
      60_000,
    )
    const after = await call('/table.csv?n=2')
    assert.equal(after.status, 200)
  })
})
