// Takes the dashboard screenshots in docs/img/ (the README embeds them).
// Usage: node --import tsx scripts/screenshots.ts
//
// It starts the real server (dev login, demo-app templates on the local provider), launches a few
// real sessions, and adds generated history rows and 24 hours of generated state samples so that
// the tables and the chart have something to show. Needs /usr/bin/chromium (or CHROMIUM_PATH).
import { mkdirSync } from 'node:fs'
import { waitFor } from '../test/helpers/wait.js'
import { demoTemplateYaml, devLogin, launchBrowser, startServer } from '../test/web/helpers.js'
import type { StateSample } from '../src/store/store.js'
import { newInstanceId } from '../src/domain/ids.js'

const OUT = new URL('../docs/img/', import.meta.url)
mkdirSync(OUT, { recursive: true })

const srv = await startServer(
  [
    'pool:',
    '  maxInstances: 12',
    'dashboard:',
    '  login: dev',
    '  admins: [ada]',
    'templates:',
    demoTemplateYaml('demo', {
      displayName: 'Demo session',
      description: 'The demo web app shipped with studiopool: a page and a WebSocket echo.',
      minFree: '1',
      pricePerHour: '0.05',
    }),
    demoTemplateYaml('course', {
      displayName: 'Course workspace',
      description: 'The demo app with a slow start (60 s), to show the launch progress.',
      startupDelayMs: '60000',
      startTimeout: '120s',
      pricePerHour: '0.12',
    }),
    demoTemplateYaml('lab', {
      displayName: 'Statistics lab',
      description: 'One seat only: a second request waits in the queue.',
      maxInstances: '1',
      pricePerHour: '0.4',
    }),
    '',
  ].join('\n'),
)
const store = srv.running.store!
const pool = srv.running.pool!
try {
  // Generated history: a day and a half of sessions by a few users.
  const now = Date.now()
  const users = ['alice', 'bob', 'carol', 'dan', 'erin']
  const reasons = ['user', 'idle', 'user', 'lifetime', 'admin'] as const
  for (let k = 0; k < 8; k++) {
    const template = ['demo', 'course', 'lab'][k % 3]!
    const startedAt = now - (30 - k * 3.3) * 3_600_000
    const endedAt = startedAt + (20 + ((k * 37) % 140)) * 60_000
    const instanceId = newInstanceId()
    await store.openAssignment({
      instanceId,
      template,
      userId: users[k % users.length]!,
      keyName: k % 2 ? 'portal' : 'dashboard',
      startedAt,
    })
    await store.closeAssignment(
      instanceId,
      endedAt,
      reasons[k % reasons.length]!,
      Math.round(((endedAt - startedAt) / 3_600_000) * [0.05, 0.12, 0.4][k % 3]! * 100) / 100,
    )
  }
  // Generated samples: every 10 minutes over 24 h, a working-day curve.
  const samples: StateSample[] = []
  for (let t = now - 86_400_000; t <= now; t += 600_000) {
    const hour = new Date(t).getUTCHours() + new Date(t).getUTCMinutes() / 60
    const load = Math.max(0, Math.sin(((hour - 7) / 12) * Math.PI))
    const ready = Math.round(1 + load * 7)
    samples.push({ at: t, template: 'demo', state: 'ready', count: ready })
    samples.push({ at: t, template: 'course', state: 'starting', count: load > 0.4 ? Math.round(load * 2) : 0 })
    samples.push({ at: t, template: 'lab', state: 'queued', count: load > 0.8 ? 1 : 0 })
  }
  await store.recordStateSamples(samples)

  // A requester key, as a portal would hold.
  const key = await fetch(`${srv.url}/api/v1/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${srv.adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'portal', role: 'requester' }),
  })
  if (key.status !== 201) throw new Error(`key: ${key.status}`)

  // Real sessions: alice has a ready demo and a starting course workspace; others use the pool.
  for (const [userId, template] of [
    ['bob', 'demo'],
    ['carol', 'lab'],
    ['dan', 'lab'],
    ['alice', 'demo'],
    ['alice', 'course'],
    ['erin', 'course'],
  ] as const) {
    await pool.request({ userId, template, keyName: userId === 'bob' ? 'portal' : 'dashboard' })
  }
  await waitFor(
    'ready demo sessions',
    async () => (await store.listInstances({ template: 'demo', states: ['ready'], assigned: true })).length >= 2,
    30_000,
  )
  const course = (await store.listInstances({ ownerId: 'alice', template: 'course' }))[0]!
  await waitFor(
    'the course workspace to start',
    async () => (await store.getInstance(course.id))?.state === 'starting',
    30_000,
  )
  // The demo app reports its progress during the startup delay; give it a moment to say something.
  await waitFor('some progress', async () => ((await store.getInstance(course.id))?.progress ?? 0) >= 30, 40_000)

  const browser = await launchBrowser()
  try {
    const user = await browser.newContext({
      viewport: { width: 1120, height: 800 },
      deviceScaleFactor: 1,
      colorScheme: 'light',
    })
    await devLogin(user, srv.url, 'alice')
    const up = await user.newPage()
    await up.goto(srv.url + '/')
    await up.screenshot({ path: new URL('dashboard-user.png', OUT).pathname, fullPage: true })

    const narrow = await browser.newContext({
      viewport: { width: 360, height: 740 },
      deviceScaleFactor: 1,
      colorScheme: 'light',
    })
    await devLogin(narrow, srv.url, 'alice')
    const np = await narrow.newPage()
    await np.goto(srv.url + '/')
    await np.screenshot({ path: new URL('dashboard-user-narrow.png', OUT).pathname, fullPage: false })

    const admin = await browser.newContext({
      viewport: { width: 1280, height: 900 },
      deviceScaleFactor: 1,
      colorScheme: 'light',
    })
    await devLogin(admin, srv.url, 'ada')
    const ap = await admin.newPage()
    await ap.goto(srv.url + '/admin')
    await ap.screenshot({ path: new URL('dashboard-admin.png', OUT).pathname, fullPage: true })
    console.log('wrote docs/img/dashboard-user.png, dashboard-user-narrow.png, dashboard-admin.png')
  } finally {
    await browser.close()
  }
} finally {
  await srv.close()
}
