/**
 * The dashboard's warning (issue 13): the user's own session card shows the same pending stop as
 * the in-session banner (time left, reason) with "Keep working", which records activity (the
 * idle stop moves back) — against the real server with real demo processes. Another user's POST,
 * and a POST without the form token, change nothing.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { waitFor } from '../helpers/wait.js'
import { demoTemplateYaml, fetchLogin, formToken, startServer, type TestServer } from './helpers.js'

describe('the dashboard warns before a stop', () => {
  let srv: TestServer
  const form = { 'content-type': 'application/x-www-form-urlencoded' }

  before(async () => {
    srv = await startServer(
      [
        'widget: { warnBefore: 10m }',
        'dashboard:',
        '  login: dev',
        'templates:',
        demoTemplateYaml('demo').replace('    provider: local', '    provider: local\n    idleTimeout: 5m'),
        demoTemplateYaml('forever').replace(
          '    provider: local',
          '    provider: local\n    idleTimeout: 0\n    maxLifetime: 0',
        ),
        '',
      ].join('\n'),
    )
  })
  after(async () => srv?.close())

  async function launch(cookie: string, template: string): Promise<string> {
    const csrf = await formToken(srv.url, cookie)
    const res = await fetch(`${srv.url}/launch`, {
      method: 'POST',
      redirect: 'manual',
      headers: { ...form, cookie, origin: srv.url },
      body: new URLSearchParams({ template, csrf }),
    })
    assert.equal(res.status, 303)
    const store = srv.running.store!
    return waitFor(
      `a ready ${template} session`,
      async () => (await store.listInstances({ states: ['ready'] })).find((i) => i.template === template)?.id,
      30_000,
    )
  }

  it('shows the idle stop with Keep working; keep working moves it; not for others; nothing for a session without limits', async () => {
    const ana = await fetchLogin(srv.url, 'ana')
    const id = await launch(ana, 'demo')
    await launch(ana, 'forever')
    const home = await (await fetch(`${srv.url}/`, { headers: { cookie: ana } })).text()
    const card = (name: string) =>
      home.slice(home.indexOf(`id="t-${name}"`), home.indexOf('</article>', home.indexOf(`id="t-${name}"`)))
    assert.match(card('demo'), /This session stops in [45] min [0-9]{2} s: it has been idle\./)
    assert.match(card('demo'), new RegExp(`action="/sessions/${id}/keep"`))
    assert.doesNotMatch(card('demo'), /\/suspend"/, 'the local provider cannot suspend: no Suspend button')
    assert.doesNotMatch(card('forever'), /stops in/)

    const before = (await srv.running.store!.getInstance(id))!
    const post = (cookie: string, csrf: string) =>
      fetch(`${srv.url}/sessions/${id}/keep`, {
        method: 'POST',
        redirect: 'manual',
        headers: { ...form, cookie, origin: srv.url },
        body: new URLSearchParams({ csrf }),
      })
    const bob = await fetchLogin(srv.url, 'bob')
    assert.equal((await post(bob, await formToken(srv.url, bob))).status, 403)
    assert.equal((await post(ana, 'not-the-token')).status, 403)
    assert.equal(
      (await srv.running.store!.getInstance(id))!.lastActivityAt,
      before.lastActivityAt,
      'refused: no activity',
    )

    const ok = await post(ana, await formToken(srv.url, ana))
    assert.equal(ok.status, 303)
    assert.equal(ok.headers.get('location'), '/?done=kept#t-demo')
    const after = (await srv.running.store!.getInstance(id))!
    assert.ok(
      (after.lastActivityAt ?? 0) > Math.max(before.lastActivityAt ?? 0, before.assignedAt ?? 0),
      'activity recorded',
    )
    const status = await srv.running.pool!.stopStatus(id)
    assert.equal(status?.pendingStop?.at, after.lastActivityAt! + 5 * 60_000)
  })
})
