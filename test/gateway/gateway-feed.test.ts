import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import { gatewayFeedRoutes } from '../../src/api/routes/gateway-feed.js'
import { createMemoryNonceLedger } from '../../src/gateway/memory-nonce-ledger.js'
import { RouteHub } from '../../src/gateway/route-hub.js'
import { createRemoteRouteSource } from '../../src/gateway/remote.js'
import type { RouteEvent } from '../../src/domain/routes.js'
import { pino } from 'pino'
import { waitFor } from '../helpers/wait.js'
import { route } from './helpers.js'

describe('gatewayFeedRoutes', () => {
  let app: FastifyInstance
  const hub = new RouteHub()
  const recorded: { id: string; at: number }[] = []
  let base = ''

  before(async () => {
    app = Fastify()
    await app.register(gatewayFeedRoutes, {
      routes: hub,
      activity: { recordActivity: async (e) => void recorded.push(...e) },
      nonces: createMemoryNonceLedger(),
      heartbeatMs: 100,
    })
    base = await app.listen({ port: 0, host: '127.0.0.1' })
  })
  after(async () => {
    await app.close()
  })

  test('activity: validated, future times clamped', async () => {
    const r = route({ address: null })
    const ok = await app.inject({
      method: 'POST',
      url: '/api/v1/gateway/activity',
      payload: { entries: [{ id: r.instanceId, at: Date.now() + 3_600_000 }] },
    })
    assert.equal(ok.statusCode, 204)
    assert.equal(recorded.length, 1)
    assert.ok(recorded[0]!.at <= Date.now())
    for (const payload of [
      { entries: [{ id: '../etc', at: 1 }] },
      { entries: [{ id: r.instanceId, at: 'x' }] },
      { nope: 1 },
    ]) {
      const bad = await app.inject({ method: 'POST', url: '/api/v1/gateway/activity', payload })
      assert.equal(bad.statusCode, 400)
    }
  })

  test('nonces: first true, then false; bad input 400', async () => {
    const body = { nonce: 'abcdefghijklmnop0123', expiresAt: Date.now() + 60_000 }
    assert.deepEqual((await app.inject({ method: 'POST', url: '/api/v1/gateway/nonces', payload: body })).json(), {
      first: true,
    })
    assert.deepEqual((await app.inject({ method: 'POST', url: '/api/v1/gateway/nonces', payload: body })).json(), {
      first: false,
    })
    assert.equal(
      (await app.inject({ method: 'POST', url: '/api/v1/gateway/nonces', payload: { nonce: 'x', expiresAt: 1 } }))
        .statusCode,
      400,
    )
  })

  test('routes stream: reset first, then changes, heartbeats; the remote source mirrors it', async () => {
    const a = route({ address: 'http://127.0.0.1:9' })
    hub.upsert(a)
    const remote = createRemoteRouteSource({ serviceUrl: base, key: 'k', log: pino({ level: 'silent' }) })
    try {
      await remote.ready(5000)
      const events: RouteEvent[] = []
      const off = remote.subscribe((e) => events.push(e))
      assert.equal(events[0]!.type, 'reset')
      assert.deepEqual((events[0] as { routes: readonly unknown[] }).routes, [a])
      const b = route({ address: null })
      hub.upsert(b)
      hub.remove(a.instanceId, 'deleted')
      await waitFor('events', () => events.length >= 3, 3000)
      assert.deepEqual(
        events.slice(1).map((e) => e.type),
        ['upsert', 'remove'],
      )
      off()
    } finally {
      remote.close()
    }
  })
})
