/**
 * Shared app pools, sticky routing (issue 14 "Must show"): a real Shiny app (R processes on the
 * local provider) shared by 30 users speaking Shiny's WebSocket protocol, on
 * maxConnectionsPerInstance 10 and loadFactor 0.5: the pool grows to the 6 instances that implies,
 * each user stays on one instance and gets their own outputs; users leave → instances drain
 * (those still used keep working until their users leave), the pool shrinks, and reaches zero
 * after the idle time; the next user (Chromium) cold-starts through the progress page.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { chromium } from 'playwright-core'
import { CHROMIUM, CHROMIUM_ARGS, e2eSkipReason } from '../e2e/harness.js'
import { waitFor } from '../helpers/wait.js'
import { fetchLogin } from '../web/helpers.js'
import { census, shinyCommand, startSharedServer, type SharedServer } from './harness.js'
import { ShinyUser } from './shiny-client.js'

const USERS = 30
const skip = e2eSkipReason()

describe('shared Shiny app, sticky routing (30 users, 10 per instance, load factor 0.5)', { skip }, () => {
  let s: SharedServer
  const users: ShinyUser[] = []
  let maxSeen = 0
  let sampler: NodeJS.Timeout | undefined

  before(async () => {
    s = await startSharedServer({
      shiny: {
        mode: 'shared',
        routing: 'sticky',
        provider: 'local',
        minInstances: 0,
        maxInstances: 8, // more than the load wants: the size below comes from the load factor, not the cap
        maxConnectionsPerInstance: 10,
        loadFactor: 0.5,
        scaleInCooldown: '5s', // longer than a reload on a busy machine
        drainGrace: '2m',
        idleTimeout: '5s',
        maxLifetime: 0,
        startTimeout: '1m',
        pathMode: 'strip',
        healthPath: '/',
        local: { command: shinyCommand, stopGrace: '2s' },
      },
    })
    sampler = setInterval(() => {
      void s
        .shared('shiny')
        .then((st) => (maxSeen = Math.max(maxSeen, census(st).total)))
        .catch(() => {})
    }, 200)
  })

  after(async () => {
    if (sampler) clearInterval(sampler)
    for (const u of users) await u.leave().catch(() => {})
    await s?.close()
  })

  test('30 users: the pool grows to 6, everyone stays on one instance with their own outputs', async () => {
    const cookies = await Promise.all(Array.from({ length: USERS }, (_, i) => fetchLogin(s.url, `user${i}`)))
    cookies.forEach((c, i) => users.push(new ShinyUser(s.url, '/a/shiny/', `user${i}`, c)))
    await Promise.all(
      users.map(async (u, i) => {
        await u.load(90_000)
        await u.connect(i + 1)
      }),
    )
    assert.ok(users[0]!.sawProgressPage, 'the first users waited on the progress page while the pool was cold')
    // The pool's view comes from the gateway's load report (once a second): wait for the report that has everyone.
    const seated = (x: { instances: readonly { connections: number }[] }) =>
      x.instances.reduce((n, i) => n + i.connections, 0)
    const st = await waitFor('6 ready instances and a load report with every user seated', async () => {
      const x = await s.shared('shiny')
      return census(x).ready === 6 && x.desired === 6 && seated(x) === USERS ? x : undefined
    })
    assert.equal(census(st).total, 6)
    assert.ok(maxSeen <= 6, `never more than the 6 instances the load wants (saw ${maxSeen})`)
    // Each instance serves at most maxConnectionsPerInstance users.
    const perPid = new Map<string, number>()
    for (const u of users) perPid.set(u.pid!, (perPid.get(u.pid!) ?? 0) + 1)
    // Users go to the least loaded instance with room as instances come up: at most 10 on one.
    const ids = new Set(st.instances.map((i) => `pid:${i.id}`))
    for (const [pid, n] of perPid) {
      assert.ok(n <= 10, `${pid} has ${n} users`)
      assert.ok(ids.has(pid), `${pid} is one of the pool's instances`)
    }
    assert.ok(perPid.size >= 3, `30 users need at least 3 instances of 10: ${JSON.stringify([...perPid])}`)
    // The admin view and the metrics show the shared pool.
    const admin = await fetchLogin(s.url, 'admin')
    const page = await (await fetch(`${s.url}/admin`, { headers: { cookie: admin } })).text()
    assert.match(page, /Shared pools/)
    assert.match(page, /wanted 6/)
    const metrics = await (
      await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${s.adminKey}` } })
    ).text()
    const lines = metrics.split('\n').filter((l) => l.startsWith('studiopool_shared_connections{template="shiny"'))
    assert.equal(lines.length, 6, 'one connections gauge per instance')
    assert.equal(
      lines.reduce((n, l) => n + Number(l.split(' ').pop()), 0),
      USERS,
    )

    // Sticky: a reload keeps the routing cookie and lands on the same R process; inputs change only one's own outputs.
    await Promise.all(
      users.map(async (u, i) => {
        const sticky = u.sticky()
        const pid = u.pid
        await u.set(100 + i)
        await u.leave()
        await u.load()
        assert.equal(u.sticky(), sticky, `${u.userId} keeps the routing cookie`)
        await u.connect(200 + i)
        assert.equal(u.pid, pid, `${u.userId} is back on the same instance`)
      }),
    )
  })

  test('users leave: instances drain without cutting anyone off, the pool shrinks, then reaches zero', async () => {
    // Keep one user on each instance in use, the rest of 10 on the two busiest (at least 3 each): 10 users want 2
    // instances, so the others drain — among them instances that still have a user working on them.
    const byPid = new Map<string, ShinyUser[]>()
    for (const u of users) byPid.set(u.pid!, [...(byPid.get(u.pid!) ?? []), u])
    const groups = [...byPid.values()].sort((a, b) => b.length - a.length)
    const onDraining = groups.slice(2).map((g) => g[0]!)
    // Split between the two busiest (each has at least 5 of the 30), so each has more than one user.
    const keep = 10 - onDraining.length
    const onKept = [...groups[0]!.slice(0, Math.ceil(keep / 2)), ...groups[1]!.slice(0, Math.floor(keep / 2))]
    const stay = [...onKept, ...onDraining]
    assert.equal(stay.length, 10)
    assert.ok(onDraining.length >= 1)
    await Promise.all(users.filter((u) => !stay.includes(u)).map((u) => u.leave()))

    let last = ''
    await waitFor(
      'the pool to keep 2 instances and drain those that still have users',
      async () => {
        const x = await s.shared('shiny')
        const c = census(x)
        last = JSON.stringify({ c, x })
        return c.ready === 2 && c.draining === onDraining.length && c.total === 2 + onDraining.length
      },
      20_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; last: ${last}`)
    })
    const st = await s.shared('shiny')
    for (const u of onDraining) {
      const inst = st.instances.find((i) => `pid:${i.id}` === u.pid)
      assert.ok(inst?.draining && inst.state === 'ready', `${u.userId}'s instance drains and still runs`)
    }
    // Nobody is cut off: every remaining user keeps working, and a reload keeps them where they are.
    let k = 0
    for (const u of stay) await u.set(300 + k++)
    // Never sent to a draining instance unless already on it: a second tab of a user there joins them;
    // a newcomer goes to an instance that takes new users.
    const u0 = onDraining[0]!
    const tab = new ShinyUser(
      s.url,
      '/a/shiny/',
      u0.userId,
      `studiopool_session=${u0.cookies.get('studiopool_session')}`,
    )
    tab.cookies.set('studiopool_session_a', u0.sticky()!)
    await tab.load()
    await tab.connect(11)
    assert.equal(tab.pid, u0.pid, 'a second tab stays on the draining instance')
    await tab.leave()
    const newcomer = new ShinyUser(s.url, '/a/shiny/', 'newcomer', await fetchLogin(s.url, 'newcomer'))
    await newcomer.load()
    await newcomer.connect(12)
    const kept = new Set(onKept.map((u) => u.pid))
    assert.ok(kept.has(newcomer.pid), `the newcomer is on an instance that is not draining (${newcomer.pid})`)
    await newcomer.leave()
    assert.ok(
      stay.every((u) => !u.cutOff),
      'no user was cut off',
    )

    // They leave: the draining instances end; the pool is 2.
    await Promise.all(onDraining.map((u) => u.leave()))
    await waitFor(
      'the drained instances to end',
      async () => {
        const c = census(await s.shared('shiny'))
        return c.total === 2 && c.draining === 0
      },
      20_000,
    )
    for (const u of onKept) await u.set(7)

    // Everyone leaves: after the idle time, zero instances.
    await Promise.all(stay.map((u) => u.leave()))
    await waitFor('zero instances after the idle time', async () => census(await s.shared('shiny')).total === 0, 30_000)
    assert.ok(stay.every((u) => !u.cutOff))
  })

  test('the next user cold-starts through the progress page (Chromium)', async () => {
    const cookie = await fetchLogin(s.url, 'late-user')
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
    try {
      const ctx = await browser.newContext()
      const [name, value] = cookie.split('=', 2) as [string, string]
      await ctx.addCookies([{ name, value, url: s.url }])
      const page = await ctx.newPage()
      const first = await page.goto(`${s.url}/a/shiny/`)
      assert.equal(first?.status(), 503)
      assert.match(await page.title(), /is starting/)
      const input = page.locator('#n')
      await input.waitFor({ timeout: 60_000 })
      await input.fill('6')
      await page.locator('#out').filter({ hasText: 'square:36' }).waitFor({ timeout: 15_000 })
      assert.equal(census(await s.shared('shiny')).total, 1)
    } finally {
      await browser.close()
    }
  })
})
