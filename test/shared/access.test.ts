/**
 * Shared app pools at the gateway (issue 14): who may open `/a/<template>/`, what the app is told,
 * and the answers for bad input. The instances are the fake provider's, all pointing at one real
 * HTTP server on loopback that echoes the request it got.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import WebSocket from 'ws'
import { loadConfig } from '../../src/config/load.js'
import { waitFor } from '../helpers/wait.js'
import { fetchLogin } from '../web/helpers.js'
import { census, startSharedServer, type SharedServer } from './harness.js'

describe('shared apps at the gateway: access, identity, bad input', () => {
  let app: Server
  let s: SharedServer
  let appUrl: string

  before(async () => {
    app = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ url: req.url, headers: req.headers }))
    })
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
    appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}`
    s = await startSharedServer({
      team: {
        mode: 'shared',
        provider: 'fake',
        allowedGroups: ['team'],
        minInstances: 0,
        maxInstances: 2,
        idleTimeout: 0,
        healthPath: '/',
        fake: { address: appUrl },
      },
      dedicated: { provider: 'fake', fake: { address: appUrl } },
      fed: { mode: 'shared', provider: 'fake', idleTimeout: 0, healthPath: '/', fake: { address: appUrl } },
      fleet: {
        mode: 'shared',
        provider: 'fake',
        idleTimeout: 0,
        healthPath: '/',
        maxInstances: 6,
        maxConnectionsPerInstance: 10,
        loadFactor: 0.5,
        scaleInCooldown: '10m',
        fake: { address: appUrl },
      },
    })
  })

  after(async () => {
    await s?.close()
    await new Promise<void>((r) => app.close(() => r()))
  })

  test('no cookie: the login page for browsers, 401 JSON for others; WebSockets 401', async () => {
    const page = await fetch(`${s.url}/a/team/x`, { headers: { accept: 'text/html' }, redirect: 'manual' })
    assert.equal(page.status, 401)
    assert.match(await page.text(), /next=.*%2Fa%2Fteam%2Fx/)
    const api = await fetch(`${s.url}/a/team/x`)
    assert.equal(api.status, 401)
    assert.equal(((await api.json()) as { error: { code: string } }).error.code, 'UNAUTHORIZED')
    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`${s.url.replace('http', 'ws')}/a/team/ws`)
      ws.on('unexpected-response', (_q, r) => resolve(r.statusCode ?? 0))
      ws.on('open', () => resolve(101))
      ws.on('error', () => {})
    })
    assert.equal(status, 401)
  })

  test('a user outside allowedGroups gets 403; a launch-link cookie (requester-scoped) too', async () => {
    const outsider = await fetchLogin(s.url, 'outsider', 'other')
    assert.equal((await fetch(`${s.url}/a/team/`, { headers: { cookie: outsider } })).status, 403)
    const scoped = s.running.tokens!.issueSession({ userId: 'u', admin: false, groups: ['team'], requesters: ['lms'] })
    const res = await fetch(`${s.url}/a/team/`, { headers: { cookie: `studiopool_session=${scoped}` } })
    assert.equal(res.status, 403)
    assert.equal(census(await s.shared('team')).total, 0, 'refused users start nothing')
  })

  test('an allowed user cold-starts the pool; the app gets their identity, never our cookies or forged headers', async () => {
    const member = await fetchLogin(s.url, 'member', 'team')
    const first = await fetch(`${s.url}/a/team/`, { headers: { cookie: member, accept: 'text/html' } })
    assert.equal(first.status, 503)
    assert.ok(first.headers.get('retry-after'))
    assert.match(await first.text(), /is starting/)
    const got = await waitFor(
      'the app through /a/team/',
      async () => {
        const r = await fetch(`${s.url}/a/team/hello?q=1`, {
          headers: { cookie: `${member}; other=1`, 'x-forwarded-user': 'admin', 'x-forwarded-groups': 'admins' },
        })
        return r.status === 200
          ? { body: (await r.json()) as { url: string; headers: Record<string, string> }, r }
          : undefined
      },
      20_000,
    )
    assert.equal(got.body.url, '/hello?q=1', 'the prefix is stripped')
    assert.equal(got.body.headers['x-forwarded-user'], 'member')
    assert.equal(got.body.headers['x-forwarded-groups'], 'team')
    assert.equal(got.body.headers['x-forwarded-prefix'], '/a/team')
    assert.equal(got.body.headers.cookie, 'other=1', 'neither the session nor the routing cookie reaches the app')
    const dashboard = await (await fetch(`${s.url}/`, { headers: { cookie: member } })).text()
    assert.match(dashboard, /href="\/a\/team\/"/, 'the dashboard links to the shared app')
    const sticky = got.r.headers.getSetCookie().find((c) => c.startsWith('studiopool_session_a='))
    assert.ok(sticky, 'a routing cookie')
    assert.match(sticky, /Path=\/a\/team\/; .*HttpOnly; SameSite=Lax/)
  })

  test('bad input: unknown template 404, missing slash redirects, dedicated templates are not at /a/, REQUEST_SESSION 400', async () => {
    const member = await fetchLogin(s.url, 'member2', 'team')
    assert.equal((await fetch(`${s.url}/a/nope/`, { headers: { cookie: member } })).status, 404)
    assert.equal((await fetch(`${s.url}/a/dedicated/`, { headers: { cookie: member } })).status, 404)
    const redirect = await fetch(`${s.url}/a/team?x=1`, { headers: { cookie: member }, redirect: 'manual' })
    assert.equal(redirect.status, 302)
    assert.equal(redirect.headers.get('location'), '/a/team/?x=1')
    const forged = await fetch(`${s.url}/a/team/`, { headers: { cookie: `${member}; studiopool_session_a=../../etc` } })
    assert.ok(forged.status === 200 || forged.status === 503, 'a malformed routing cookie is ignored')
    const res = await fetch(`${s.url}/api/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${s.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'REQUEST_SESSION', payload: { userId: 'u1', template: 'team' } }),
    })
    assert.equal(res.status, 400)
    const body = (await res.json()) as { error: { code: string; message: string } }
    assert.equal(body.error.code, 'INVALID_REQUEST')
    assert.match(body.error.message, /\/a\/team\//)
  })

  test("a split-mode gateway's load report (proxy or admin key) scales the pool; bad reports are 400", async () => {
    const post = (body: unknown, key: string | null = s.adminKey) =>
      fetch(`${s.url}/api/v1/gateway/shared-load`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
        body: JSON.stringify(body),
      })
    const load = { template: 'fed', at: Date.now(), instances: [], waiting: 12, queued: 0, maxQueueWaitMs: 0 }
    assert.equal((await post({ loads: [load] }, null)).status, 401)
    assert.equal((await post({ loads: [{ ...load, waiting: -1 }] })).status, 400)
    assert.equal((await post({ loads: [{ ...load, extra: 1 }] })).status, 400)
    assert.equal((await post({ loads: [load] })).status, 204)
    // 12 waiting at 20 per instance and load factor 0.5 (the defaults) want 2.
    await waitFor('2 instances for the reported load', async () => census(await s.shared('fed')).total === 2)
  })

  test('several gateways: the pool adds up their latest reports, one per source', async () => {
    const post = (
      source: string,
      waiting: number,
      instances: { id: string; connections: number; requests: number }[] = [],
    ) =>
      fetch(`${s.url}/api/v1/gateway/shared-load`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${s.adminKey}` },
        body: JSON.stringify({
          loads: [{ template: 'fleet', source, at: Date.now(), instances, waiting, queued: 0, maxQueueWaitMs: 0 }],
        }),
      })
    // 10 waiting at 10 per instance and load factor 0.5 want 2; the same gateway again replaces its report.
    assert.equal((await post('gw-a', 10)).status, 204)
    assert.equal((await post('gw-a', 10)).status, 204)
    await waitFor('2 wanted for one gateway', async () => (await s.shared('fleet')).desired === 2)
    // A second gateway's 10 more: 20 want 4.
    assert.equal((await post('gw-b', 10)).status, 204)
    const st = await waitFor('4 wanted for two gateways', async () => {
      const x = await s.shared('fleet')
      return x.desired === 4 && census(x).total === 4 ? x : undefined
    })
    // Connections to one instance through both gateways add up.
    const id = st.instances[0]!.id
    assert.equal((await post('gw-a', 10, [{ id, connections: 3, requests: 7 }])).status, 204)
    assert.equal((await post('gw-b', 10, [{ id, connections: 2, requests: 1 }])).status, 204)
    await waitFor("the instance counts both gateways' connections", async () => {
      const i = (await s.shared('fleet')).instances.find((x) => x.id === id)
      return i?.connections === 5 && i.requests === 8
    })
    assert.equal((await post('gw/../x', 0)).status, 400, 'a source is a plain name')
  })

  test("a split-mode gateway's users' shares: well-formed ones are recorded, bad shapes are 400 INVALID_REQUEST", async () => {
    const post = (shares: unknown) =>
      fetch(`${s.url}/api/v1/gateway/shared-load`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${s.adminKey}` },
        body: JSON.stringify({
          loads: [{ template: 'fed', at: Date.now(), instances: [], waiting: 0, queued: 0, maxQueueWaitMs: 0, shares }],
        }),
      })
    const id =
      census(await s.shared('fed')).total > 0 ? (await s.shared('fed')).instances[0]!.id : 'abcdefghij0123456789'
    const good = { id, generation: 0, busyMs: 1000, users: [{ userId: 'ada', weight: 700 }] }
    const bad: [string, unknown][] = [
      ['busyMs negative', [{ ...good, busyMs: -1 }]],
      ['busyMs over ten minutes', [{ ...good, busyMs: 600_001 }]],
      ['a weight that is not a number', [{ ...good, users: [{ userId: 'ada', weight: '700' }] }]],
      ['a negative weight', [{ ...good, users: [{ userId: 'ada', weight: -1 }] }]],
      ['a bad user id', [{ ...good, users: [{ userId: '', weight: 1 }] }]],
      ['an unknown field', [{ ...good, seats: 3 }]],
      ['users missing', [{ id, generation: 0, busyMs: 5 }]],
      ['not an array', good],
      ['a bad instance id', [{ ...good, id: '../x' }]],
    ]
    for (const [what, shares] of bad) {
      const res = await post(shares)
      assert.equal(res.status, 400, what)
      const body = (await res.json()) as { error: { code: string; details?: { path: string }[] } }
      assert.equal(body.error.code, 'INVALID_REQUEST', what)
      assert.ok(
        body.error.details?.some((d) => d.path.startsWith('/body/loads/0/shares')),
        `${what}: names the path`,
      )
    }
    assert.equal((await post([good])).status, 204)
    assert.equal((await post([])).status, 204, 'no shares')
    // Recorded: the pool's store holds ada's weight for that instance.
    const rows = await waitFor('the share in the store', async () => {
      await s.running.pool!.cost.shared.flush()
      const r = await s.running.store!.sharedUsage.list({ instanceId: id })
      return r.length ? r : undefined
    })
    assert.deepEqual(
      rows.map((r) => [r.userId, r.weight, r.ms]),
      [['ada', 700, 1000]],
    )
  })

  test('configuration: shared keys are checked, every problem named by path', () => {
    const yaml = [
      'templates:',
      '  a: { mode: shared, loadFactor: 1.5, minFree: 1 }',
      '  b: { mode: shared, minInstances: 5, maxInstances: 2, upstreamHeaders: { Authorization: "token {{appToken}}" } }',
    ].join('\n')
    assert.throws(
      () => loadConfig({ text: yaml, env: {}, cwd: '/tmp', overrides: {} }),
      (err: Error) => {
        assert.match(err.message, /\/templates\/a\/loadFactor/)
        return true
      },
    )
    const cross = ['templates:', '  b: { mode: shared, minInstances: 5, maxInstances: 2, minFree: 1 }'].join('\n')
    assert.throws(
      () => loadConfig({ text: cross, env: {}, cwd: '/tmp', overrides: {} }),
      (err: Error) => {
        assert.match(err.message, /\/templates\/b\/minInstances/)
        assert.match(err.message, /\/templates\/b\/minFree/)
        return true
      },
    )
    const ok = loadConfig({
      text: 'templates:\n  c: { mode: shared, routing: per-request }',
      env: {},
      cwd: '/tmp',
      overrides: {},
    })
    assert.equal(ok.templates[0]!.shared?.routing, 'per-request')
    assert.equal(ok.templates[0]!.shared?.maxConnectionsPerInstance, 20)
  })
})
