/**
 * One meaning of "stop" everywhere (issue 17): on the API, the CLI and the user's dashboard it ends
 * the session; keeping the disk is "suspend". The admin page offers Suspend and Resume for a
 * provider that can, and the action does what its label says.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { startAppStub, startServer, waitFor, type TestServer } from '../api/helpers.js'
import { fetchLogin, formToken } from './helpers.js'

describe('admin instance actions', () => {
  let app: Awaited<ReturnType<typeof startAppStub>>
  let s: TestServer
  const form = { 'content-type': 'application/x-www-form-urlencoded' }

  before(async () => {
    app = await startAppStub()
    s = await startServer(
      'sqlite',
      `dashboard: { login: dev, admins: [ada] }
worker: { interval: 1h }
templates:
  demo:
    provider: fake
    minFree: 1
    fake: { address: ${JSON.stringify(app.url)} }
`,
    )
  })
  after(async () => {
    await s?.close()
    await app?.close()
  })

  it('Suspend keeps the instance and its owner, Resume brings it back; no admin button says Stop', async () => {
    const ready = await waitFor(
      'a warm demo instance',
      async () => (await s.store.listInstances({ template: 'demo', states: ['ready'] }))[0],
      10_000,
    )
    const ada = await fetchLogin(s.url, 'ada')
    const page = await (await fetch(`${s.url}/admin`, { headers: { cookie: ada } })).text()
    assert.match(page, new RegExp(`/admin/instances/${ready.id}/suspend`))
    assert.doesNotMatch(page, />Stop</, 'the admin page has no Stop button (stop means end the session elsewhere)')
    const csrf = await formToken(s.url, ada, '/admin')
    const act = (action: string) =>
      fetch(`${s.url}/admin/instances/${ready.id}/${action}`, {
        method: 'POST',
        redirect: 'manual',
        headers: { ...form, cookie: ada, origin: s.url },
        body: new URLSearchParams({ csrf }),
      })
    const r = await act('suspend')
    assert.equal(r.status, 303)
    assert.match(r.headers.get('location') ?? '', /done=suspended/)
    const suspended = await s.store.getInstance(ready.id)
    assert.equal(suspended?.state, 'suspended')
    const after = await (await fetch(`${s.url}/admin?done=suspended`, { headers: { cookie: ada } })).text()
    assert.match(after, /suspended; its disk is kept/)
    assert.match(after, new RegExp(`/admin/instances/${ready.id}/resume`))
    assert.equal((await act('stop')).status, 404, 'the old action name is gone, not silently suspending')
    assert.equal((await act('resume')).status, 303)
    await waitFor(
      'the instance to be ready again',
      async () => (await s.store.getInstance(ready.id))?.state === 'ready',
    )
  })
})
