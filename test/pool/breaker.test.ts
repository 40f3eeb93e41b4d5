/**
 * Issue 9, item 2: a create that fails at once with minFree 1 must not loop. Per-template
 * backoff with jitter, a circuit breaker after non-transient failures (503 PROVIDER_UNAVAILABLE
 * with the cause and Retry-After, nothing created), re-probes that close it, and an event loop
 * that keeps serving sockets throughout. Both stores, the fake provider's failure injection.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { AppError, ProviderError } from '../../src/domain/errors.js'
import { CreateBreaker } from '../../src/pool/create-breaker.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { waitFor } from '../helpers/wait.js'
import { STORE_KINDS } from '../helpers/stores.js'

/**
 * A pool id of this test's own: Postgres advisory-lock keys (the pool lock, worker leadership) derive
 * from it and are database-wide, so a shared id would make this test wait on other runs against the same database.
 */
const ownPool = () => `t-${newInstanceId().slice(0, 10)}`
import { appServer, makeHarness } from './harness.js'

const app = await appServer()
after(() => app.close())

const YAML = `
pool: { id: test, maxInstances: 10 }
worker: { interval: 50ms }
templates:
  demo: { provider: fake, minFree: 1, maxInstances: 10, healthPath: / }
`

describe('CreateBreaker', () => {
  test('backs off exponentially with jitter, opens after repeated non-transient failures (auth at once), probes one at a time, closes on success', () => {
    let now = 0
    let rnd = 0
    const b = new CreateBreaker({ baseMs: 1000, maxMs: 8000, openAfter: 3, random: () => rnd }, () => now)
    b.failed('t', new ProviderError('x', 'throttled', { retryable: true }), 'throttled')
    assert.equal(b.state('t')!.open, false)
    assert.equal(b.state('t')!.nextAttemptAt, 500, 'first delay: base × [0.5, 1)')
    assert.equal(b.permit('t', 'a'), false)
    now = 500
    assert.equal(b.permit('t', 'a'), true, 'a transient failure only delays')
    rnd = 0.999
    b.failed('t', new Error('boom'), 'boom')
    b.failed('t', new Error('boom'), 'boom')
    assert.equal(b.state('t')!.open, false, 'two non-transient failures: still closed')
    b.failed('t', Object.assign(new Error('no such file'), { code: 'ENOENT' }), 'no such file')
    const st = b.state('t')!
    assert.equal(st.open, true)
    assert.equal(st.kind, 'missing')
    assert.ok(st.nextAttemptAt - now <= 8000 && st.nextAttemptAt - now > 4000, 'capped at maxMs')
    assert.match(b.openReason('t')!, /no such file/)
    now = st.nextAttemptAt
    assert.equal(b.permit('t', 'probe'), true)
    assert.equal(b.permit('t', 'other'), false, 'one probe at a time')
    assert.equal(b.permit('t', 'probe'), true)
    b.succeeded('t')
    assert.equal(b.state('t'), undefined)
    b.failed('u', new ProviderError('x', 'AWS denied ec2:RunInstances', { code: 'PROVIDER_UNAVAILABLE' }), 'denied')
    assert.equal(b.state('u')!.open, true, 'auth opens at the first failure')
  })
})

for (const kind of STORE_KINDS) {
  describe(`provider failures on ${kind.name}`, () => {
    test('a create that fails at once with minFree 1 does not loop; requests get 503 PROVIDER_UNAVAILABLE with the cause and Retry-After and create nothing; a re-probe closes the breaker', async () => {
      const h = makeHarness(await kind.make({ poolId: ownPool() }), YAML, {
        appUrl: app.url,
        backoff: { baseMs: 100, maxMs: 400 },
      })
      try {
        h.provider.failCreate = () =>
          Object.assign(new Error("EACCES: permission denied, mkdir '/data/instances/x'"), { code: 'EACCES' })
        h.worker.start()
        // Over two seconds of worker cycles every 50 ms, at most a handful of creates (backoff ≥ 50 ms, growing to 200–400 ms).
        await waitFor('the breaker to open', () => h.pool.breakers()[0]?.open, 30_000)
        const t0 = Date.now()
        await waitFor('time to pass under worker cycles', () => Date.now() - t0 > 1500, 3000, 100)
        const creates = h.provider.calls.create
        assert.ok(creates <= 10, `creates are backed off (${creates} in ~2 s)`)
        const failed = await h.store.listInstances({ states: ['failed'] })
        assert.ok(failed.length <= creates, `failed rows (${failed.length}) never outnumber the creates`)
        assert.match(h.pool.unavailableReason('demo')!, /EACCES/)
        // A request while the breaker is open (and its probe waits for the backoff): 503, nothing created or queued.
        const before = (await h.store.listInstances({})).length
        const err = await waitFor('a 503 PROVIDER_UNAVAILABLE', async () => {
          const e = await h.pool.request({ userId: 'alice' }).then(
            () => undefined,
            (x: unknown) => x,
          )
          return e instanceof AppError && e.code === 'PROVIDER_UNAVAILABLE' ? e : undefined
        })
        assert.equal(err.statusCode, 503)
        assert.match(err.message, /EACCES/)
        assert.ok(err.retryAfter! >= 1)
        assert.ok((await h.store.listInstances({})).length - before <= 1, 'the request made no row (a probe may have)')
        assert.equal((await h.store.findLive('alice', 'demo'))?.state ?? null, null)
        // The cause goes away: the worker's re-probe succeeds and closes the breaker, the warm pool fills.
        h.provider.failCreate = undefined
        await waitFor('the breaker to close', () => h.pool.breakers().length === 0, 10_000)
        await waitFor(
          'a warm instance',
          async () => (await h.store.listInstances({ states: ['ready'], assigned: false })).length === 1,
        )
        assert.equal(h.pool.unavailableReason('demo'), undefined)
        const r = await h.pool.request({ userId: 'alice' })
        assert.equal(r.outcome, 'warm')
      } finally {
        await h.close()
      }
    })

    test('the fail → top-up → create path leaves the microtask queue: with no backoff at all a real socket is still answered promptly', async () => {
      const h = makeHarness(await kind.make({ poolId: ownPool() }), YAML, {
        appUrl: app.url,
        backoff: { baseMs: 0, maxMs: 0 },
      })
      const srv = createServer((_req, res) => res.end('alive'))
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
      try {
        h.provider.failCreate = () => new Error('fails at once')
        await h.pool.topUp()
        await waitFor('the failing creates to run', () => h.provider.calls.create >= 5, 30_000)
        for (let i = 0; i < 5; i++) {
          const t0 = performance.now()
          const r = await request(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/`)
          assert.equal(await r.body.text(), 'alive')
          assert.ok(performance.now() - t0 < 1000, 'the event loop serves sockets between failures')
        }
        h.provider.failCreate = undefined
        await waitFor(
          'the warm pool to recover',
          async () => (await h.store.listInstances({ states: ['ready'], assigned: false })).length === 1,
        )
      } finally {
        await new Promise<void>((r) => (srv.closeAllConnections(), srv.close(() => r())))
        await h.close()
      }
    })
  })
}
