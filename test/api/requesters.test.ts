/**
 * The requester that created a session is part of its identity (issue 8): another requester asking
 * for the same user and template gets 409 CONFLICT, never a link into it, and the cookie from one
 * requester's launch link opens only that requester's sessions. Real server, real sockets, SQLite and
 * Postgres (the answer comes from the store's atomic claim on both).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { dropSchemas } from '../helpers/pg.js'
import { command, startAppStub, startServer, STORES, waitFor, type TestServer } from './helpers.js'

after(dropSchemas)

const A = 'portal-a-key-0123456789abcdef'
const B = 'portal-b-key-0123456789abcdef'

for (const kind of STORES) {
  describe(`requester identity (${kind})`, () => {
    let app: Awaited<ReturnType<typeof startAppStub>>
    let s: TestServer

    before(async () => {
      app = await startAppStub()
      const addr = JSON.stringify(app.url)
      s = await startServer(
        kind,
        `worker: { interval: 1h }
auth:
  keys:
    - { name: portal-a, role: requester, key: ${A} }
    - { name: portal-b, role: requester, key: ${B} }
templates:
  warm:
    provider: fake
    minFree: 2
    fake: { address: ${addr} }
  cold:
    provider: fake
    fake: { address: ${addr} }
`,
      )
      await waitFor(
        'two warm instances',
        async () =>
          (await s.store.listInstances({ template: 'warm', assigned: false, states: ['ready'] })).length === 2,
        10_000,
      )
    })
    after(async () => {
      await s?.close()
      await app?.close()
    })

    test("requester B asking for alice's live session that requester A made gets 409 CONFLICT, warm or cold; A still gets it", async () => {
      for (const template of ['warm', 'cold']) {
        const a = await command(s.url, A, 'REQUEST_SESSION', { userId: 'alice', template })
        assert.equal(a.status, 200, a.text)
        const b = await command(s.url, B, 'REQUEST_SESSION', { userId: 'alice', template })
        assert.equal(b.status, 409, b.text)
        assert.equal(b.json.error.code, 'CONFLICT')
        assert.match(
          b.json.error.message,
          /alice.*live session of template "(warm|cold)" requested by another application/,
        )
        assert.ok(!b.text.includes(a.json.instanceId), 'no trace of the other requester’s session')
        const again = await command(s.url, A, 'REQUEST_SESSION', { userId: 'alice', template })
        assert.equal(again.json.outcome, 'existing')
        assert.equal(again.json.instanceId, a.json.instanceId)
        // The REST form answers the same.
        const rest = await request(`${s.url}/api/v1/sessions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${B}`, 'content-type': 'application/json' },
          body: JSON.stringify({ userId: 'alice', template }),
        })
        assert.equal(rest.statusCode, 409)
        await rest.body.dump()
      }
      assert.equal(
        (await s.store.listInstances({ ownerId: 'alice', states: ['provisioning', 'starting', 'ready'] })).length,
        2,
        'one session per template, no second one',
      )
    })

    test('two requesters racing for one user: one session, every answer of the loser is 409', async () => {
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          command(s.url, i % 2 ? B : A, 'REQUEST_SESSION', { userId: 'carol', template: 'warm' }),
        ),
      )
      const ok = results.filter((r) => r.status === 200)
      const conflicts = results.filter((r) => r.status === 409)
      assert.equal(ok.length + conflicts.length, 12, results.map((r) => r.status).join(','))
      assert.equal(new Set(ok.map((r) => r.json.instanceId)).size, 1, 'one session')
      const winner = (await s.store.getInstance(ok[0]!.json.instanceId))!.keyName
      const winnerKey = winner === 'portal-a' ? A : B
      for (const [i, r] of results.entries())
        assert.equal(r.status, (i % 2 ? B : A) === winnerKey ? 200 : 409, `request ${i}`)
    })

    test("a cookie from requester A's launch link opens A's session of the user but not B's", async () => {
      const a = await command(s.url, A, 'REQUEST_SESSION', { userId: 'dana', template: 'warm' })
      const b = await command(s.url, B, 'REQUEST_SESSION', { userId: 'dana', template: 'cold' })
      assert.equal(b.status, 200, b.text)
      await waitFor(
        "B's session ready",
        async () => (await s.store.getInstance(b.json.instanceId))?.state === 'ready',
        10_000,
      )
      const launch = await request(a.json.url)
      assert.equal(launch.statusCode, 302)
      await launch.body.dump()
      const cookie = String(launch.headers['set-cookie']).split(';')[0]!
      const mine = await request(a.json.sessionUrl, { headers: { cookie } })
      assert.equal(mine.statusCode, 200)
      assert.equal(await mine.body.text(), 'ok')
      const theirs = await request(b.json.sessionUrl, { headers: { cookie, accept: 'text/html' } })
      assert.equal(theirs.statusCode, 403)
      assert.match(await theirs.body.text(), /another application/)
      // B's own link opens B's session (and, in the same browser, the cookie then opens both).
      const lb = await request(b.json.url, { headers: { cookie } })
      assert.equal(lb.statusCode, 302)
      await lb.body.dump()
      const both = String(lb.headers['set-cookie']).split(';')[0]!
      for (const u of [a.json.sessionUrl, b.json.sessionUrl]) {
        const r = await request(u, { headers: { cookie: both } })
        assert.equal(r.statusCode, 200, u)
        await r.body.dump()
      }
    })
  })
}
