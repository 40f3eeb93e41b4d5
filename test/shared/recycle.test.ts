/**
 * Recycling a shared instance (issue 14): after `recycleAfterRequests` the pool starts the
 * replacement first and only then drains the old instance, which ends once its requests are done;
 * requests keep being answered throughout. Fake provider instances pointing at one real HTTP server.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { waitFor } from '../helpers/wait.js'
import { fetchLogin } from '../web/helpers.js'
import { census, startSharedServer, type SharedServer } from './harness.js'

describe('shared instance recycling', () => {
  let app: Server
  let s: SharedServer

  before(async () => {
    app = createServer((_req, res) => res.end('ok'))
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
    const address = `http://127.0.0.1:${(app.address() as AddressInfo).port}`
    s = await startSharedServer({
      api: {
        mode: 'shared',
        routing: 'per-request',
        provider: 'fake',
        minInstances: 1,
        maxInstances: 3,
        recycleAfterRequests: 20,
        idleTimeout: 0,
        healthPath: '/',
        fake: { address, startDelayMs: 300 },
      },
    })
  })

  after(async () => {
    await s?.close()
    await new Promise<void>((r) => app.close(() => r()))
  })

  test('after recycleAfterRequests: replacement first, then the old one drains and ends', async () => {
    const cookie = await fetchLogin(s.url, 'user')
    const first = await waitFor('one ready instance', async () => {
      const x = await s.shared('api')
      return census(x).ready === 1 ? x.instances[0]!.id : undefined
    })
    // Watch the pool while it recycles: the old instance must never drain with no other ready.
    const seen: string[] = []
    let drainedAlone = false
    const sampler = setInterval(() => {
      void s.shared('api').then((x) => {
        const old = x.instances.find((i) => i.id === first)
        const others = x.instances.filter((i) => i.id !== first && i.state === 'ready' && !i.draining)
        if (old?.draining && others.length === 0) drainedAlone = true
        seen.push(
          x.instances.map((i) => `${i.id === first ? 'old' : 'new'}:${i.state}${i.draining ? '/d' : ''}`).join(','),
        )
      })
    }, 50)
    try {
      for (let i = 0; i < 25; i++) {
        const r = await fetch(`${s.url}/a/api/n${i}`, { headers: { cookie } })
        assert.equal(r.status, 200)
        await r.text()
      }
      const x = await waitFor(
        'the old instance to be replaced',
        async () => {
          const st = await s.shared('api')
          return !st.instances.some((i) => i.id === first) && census(st).ready === 1 ? st : undefined
        },
        20_000,
      )
      assert.equal(x.events.recycled, 1)
      assert.ok(x.events.started >= 2)
      assert.equal(drainedAlone, false, `the replacement was ready before the old one drained: ${seen.join(' | ')}`)
      assert.ok(
        seen.some((v) => v.includes('old:ready/d')),
        'the old instance drained before it ended',
      )
      const r = await fetch(`${s.url}/a/api/after`, { headers: { cookie } })
      assert.equal(r.status, 200)
    } finally {
      clearInterval(sampler)
    }
  })
})
