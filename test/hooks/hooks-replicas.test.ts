/**
 * Operator hooks with two replicas on one Postgres store (issue 17, docs/hooks.md "Replicas"): every
 * session.ready and session.ended event runs each hook exactly once, whichever replica saw the event
 * and whichever runs the hook; the outcome is in the shared audit. Real `studiopool serve` processes;
 * sessions on the fake provider, pointing at an HTTP server of this test.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { dropSchemas, freshPgUrl } from '../helpers/pg.js'
import { api, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'

const skip = process.env.STUDIOPOOL_SKIP_PG === '1' ? 'STUDIOPOOL_SKIP_PG=1' : undefined
const dir = mkdtempSync(join(tmpdir(), 'sp-hooks-rep-'))
const procs: ServerProcess[] = []
const ADMIN = 'hooks-replicas-admin-key-0123456789'
const SECRET = 'hooks-replicas-gateway-secret-0123456789abcdef'
const LOG = join(dir, 'hooks.log')
const N = 6

after(async () => {
  for (const p of procs) await p.kill()
  await dropSchemas()
  rmSync(dir, { recursive: true, force: true })
})

test(
  'two replicas: each hook runs once per event, wherever the event was seen',
  { skip, timeout: 180_000 },
  async () => {
    const app = createServer((_req, res) => res.end('ok'))
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
    try {
      const script = join(dir, 'hook.mjs')
      writeFileSync(
        script,
        `import { appendFileSync } from 'node:fs'
appendFileSync(${JSON.stringify(LOG)}, [process.env.STUDIOPOOL_EVENT, process.env.STUDIOPOOL_INSTANCE_ID, process.env.STUDIOPOOL_EVENT_ID, process.env.REPLICA].join(' ') + '\\n')
`,
      )
      const url = await freshPgUrl()
      const config = `store: { driver: postgres, url: ${JSON.stringify(url)} }
server: { dataDir: ./data }
auth:
  keys:
    - { name: ops, role: admin, key: ${ADMIN} }
worker: { interval: 300ms }
templates:
  demo:
    provider: fake
    minFree: 0
    maxInstances: 20
    healthPath: /
    fake: { address: http://127.0.0.1:${(app.address() as AddressInfo).port} }
hooks:
  - name: record
    on: [session.ready, session.ended]
    command: [node, ${JSON.stringify(script)}]
`
      const replicas: ServerProcess[] = []
      for (const name of ['a', 'b']) {
        const cwd = mkdtempSync(join(dir, `${name}-`))
        const s = await spawnServer({ cwd, config, env: { STUDIOPOOL_SECRET: SECRET, REPLICA: name }, strict: true })
        procs.push(s)
        replicas.push(s)
      }
      // Sessions requested through both replicas, then ended through the other one.
      const ids: string[] = []
      for (let i = 0; i < N; i++) {
        const r = await api<{ instanceId: string }>(replicas[i % 2]!.url, ADMIN, 'POST', '/api/v1/sessions', {
          userId: `u${i}`,
        })
        assert.ok(r.status < 300, JSON.stringify(r.body))
        ids.push(r.body.instanceId)
      }
      const lines = () => (existsSync(LOG) ? readFileSync(LOG, 'utf8').trim().split('\n').filter(Boolean) : [])
      const events = (on: string) => lines().filter((l) => l.startsWith(`${on} `))
      await waitFor(`session.ready ran for all ${N}`, () => events('session.ready').length >= N, 60_000)
      for (let i = 0; i < N; i++) {
        const del = await api(replicas[(i + 1) % 2]!.url, ADMIN, 'DELETE', `/api/v1/instances/${ids[i]}`)
        assert.equal(del.status, 200, JSON.stringify(del.body))
      }
      await waitFor(`session.ended ran for all ${N}`, () => events('session.ended').length >= N, 60_000)
      // The audit has one run per event: once the queue is empty nothing runs a second time.
      await waitFor('every hook run audited', async () => {
        const a = await api<{ events: { event: string }[] }>(replicas[0]!.url, ADMIN, 'GET', '/api/v1/audit?limit=500')
        return a.body.events.filter((e) => e.event === 'hook').length >= 2 * N
      })
      const audited = await api<{ events: { event: string; instanceId: string; detail: Record<string, unknown> }[] }>(
        replicas[1]!.url,
        ADMIN,
        'GET',
        '/api/v1/audit?limit=500',
      )
      const runs = audited.body.events.filter((e) => e.event === 'hook').map((e) => String(e.detail['eventId']))
      const ran = lines().map((l) => l.split(' '))
      // Exactly once per event id (a session made ready again under a new generation is a new event).
      const eventIds = ran.map((l) => l[2]!)
      assert.equal(new Set(eventIds).size, eventIds.length, `each event ran the hook once: ${lines().join(' | ')}`)
      const pairs = new Set(ran.map((l) => `${l[0]} ${l[1]}`))
      for (const id of ids)
        for (const on of ['session.ready', 'session.ended']) assert.ok(pairs.has(`${on} ${id}`), `${on} ${id} ran`)
      assert.deepEqual([...runs].sort(), [...eventIds].sort(), 'each run audited once')
    } finally {
      await new Promise<void>((r) => app.close(() => r()))
    }
  },
)
