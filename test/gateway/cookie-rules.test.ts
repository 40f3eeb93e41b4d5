/**
 * The cookie rules as a browser meets them through the gateway (gateway/session-cookie.ts): with
 * several cookies of our name the first valid one opens the session, a quoted value works, a
 * look-alike name does not, and the app never sees any copy of ours.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import { route, startGateway, startUpstream } from './helpers.js'
import type { TestGateway, Upstream } from './helpers.js'

describe('session cookie rules through the gateway', () => {
  let app: Upstream
  let g: TestGateway
  const client = new Agent()
  const r = route({ address: '', ownerId: 'alice' })

  before(async () => {
    app = await startUpstream()
    g = await startGateway()
    g.hub.upsert({ ...r, address: app.url })
  })
  after(async () => {
    await client.close()
    await g.close()
    await app.close()
  })

  const get = async (cookie: string) => {
    const res = await request(`${g.base}/s/${r.instanceId}/echo`, { dispatcher: client, headers: { cookie } })
    const text = await res.body.text()
    return {
      status: res.statusCode,
      body: res.statusCode === 200 ? (JSON.parse(text) as { headers: Record<string, string> }) : null,
    }
  }

  test('a stale copy first and the valid one second: the session opens; the app sees neither', async () => {
    const alice = g.cookie('alice') // sp_session=<token>
    const [name, value] = alice.split('=') as [string, string]
    const res = await get(`${name}=stale.token; theme=dark; ${alice}`)
    assert.equal(res.status, 200)
    assert.equal(res.body!.headers.cookie, 'theme=dark')
    assert.equal((await get(`${name}="${value}"`)).status, 200, 'a quoted value')
    assert.equal((await get(`x${name}=${value}`)).status, 401, 'a longer name is another cookie')
    assert.equal((await get(`${name}=${value}%00`)).status, 401, 'a malformed value')
  })
})
