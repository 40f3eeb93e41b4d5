/**
 * OUTSIDE_SCHEDULE through the real server (issue 13): a template outside its schedule's windows
 * with `outside: unavailable` answers the seed's command protocol and REST v1 with 503, a stable code,
 * the next opening and Retry-After — no stack, nothing created; /api/v1/templates shows its target.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { WEEKDAYS } from '../../src/schedule/schedule.js'
import { dropSchemas } from '../helpers/pg.js'
import { assertNoStack, call, command, startServer, STORES, waitFor, type TestServer } from '../api/helpers.js'

/** A window on the weekday two days from now (UTC), 00:00–01:00: closed at this instant whenever the test runs. */
function closedNow(): { days: string; opensAt: number } {
  const now = new Date()
  const day = (now.getUTCDay() + 6 + 2) % 7 // 0 = Monday
  const opens = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 2)
  return { days: WEEKDAYS[day]!, opensAt: opens }
}

after(dropSchemas)

for (const kind of STORES) {
  describe(`OUTSIDE_SCHEDULE over HTTP, on ${kind}`, () => {
    let s: TestServer
    after(async () => s?.close())

    test('refused with 503, the code, the next opening and Retry-After; nothing is created', async () => {
      const { days, opensAt } = closedNow()
      s = await startServer(
        kind,
        `
worker: { interval: 1s }
templates:
  shiny:
    provider: fake
    minFree: 2
    schedule: { timezone: UTC, windows: [{ days: ${days}, from: '00:00', to: '01:00' }], outside: unavailable }
`,
      )
      const key = (
        await call(s.url, 'POST', '/api/v1/keys', { key: s.adminKey, body: { name: 'lms', role: 'requester' } })
      ).json.key
      const r = await command(s.url, key, 'REQUEST_SESSION', { userId: 'u1', template: 'shiny' })
      assert.equal(r.status, 503)
      assert.equal(r.json.error.code, 'OUTSIDE_SCHEDULE')
      assert.match(
        r.json.error.message,
        new RegExp(`the next opening is ${new Date(opensAt).toISOString().replace(/\./g, '\\.')}`),
      )
      const retry = Number(r.headers['retry-after'])
      assert.ok(retry > 0 && Math.abs(retry - (opensAt - Date.now()) / 1000) < 120, `Retry-After ${retry}`)
      assertNoStack(r.text)
      const rest = await call(s.url, 'POST', '/api/v1/sessions', { key, body: { userId: 'u1', template: 'shiny' } })
      assert.equal(rest.status, 503)
      assert.equal(rest.json.error.code, 'OUTSIDE_SCHEDULE')
      // The worker's cycle sets the target: nothing warm while closed, though the template's minFree is 2.
      const t = await waitFor('the worker to set the warm target', async () => {
        const list = (await call(s.url, 'GET', '/api/v1/templates', { key: s.adminKey })).json.templates
        return list.find((x: { name: string; warmTarget: unknown }) => x.name === 'shiny' && x.warmTarget)
      })
      assert.deepEqual(
        [t.warmTarget.available, t.warmTarget.minFree, t.warmTarget.opensAt],
        [false, 0, new Date(opensAt).toISOString()],
      )
      assert.equal((await s.store.listInstances({ template: 'shiny' })).length, 0)
    })
  })
}
