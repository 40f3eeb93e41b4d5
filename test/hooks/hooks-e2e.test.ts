/**
 * Operator hooks end to end (issue 17, docs/hooks.md): a real `studiopool serve` (local provider)
 * runs real hook scripts on session.ready and session.ended, in event order; a run that sleeps past
 * its timeout is killed with its process group and audited as `timeout`, and the hook's next event
 * still runs; each outcome is visible through GET /api/v1/audit, with the hook's env secrets blanked.
 */
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { api, DEMO_APP, isAlive, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'

const dir = mkdtempSync(join(tmpdir(), 'sp-hooks-'))
const procs: ServerProcess[] = []
after(async () => {
  for (const p of procs) await p.kill()
  rmSync(dir, { recursive: true, force: true })
})

const LOG = join(dir, 'hooks.log')
const TOKEN = 'hook-secret-token-4242'
// Records what it was given; `slow` sleeps on session.ready (in a grandchild too) past its timeout.
const SCRIPT = `
import { appendFileSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
let input = ''
for await (const c of process.stdin) input += c
const ev = JSON.parse(input)
const e = process.env
appendFileSync(${JSON.stringify(LOG)}, [process.argv[2], e.STUDIOPOOL_EVENT, e.STUDIOPOOL_INSTANCE_ID, e.STUDIOPOOL_USER,
  e.STUDIOPOOL_TEMPLATE, e.STUDIOPOOL_HOST, e.STUDIOPOOL_REASON || '-', ev.type, ev.data.instanceId, e.STUDIOPOOL_SESSION_URL,
  e.STUDIOPOOL_KEY ? 'leaked' : 'clean'].join(' ') + '\\n')
process.stderr.write('token is ' + e.HOOK_TOKEN + '\\n')
if (process.argv[2] === 'slow' && e.STUDIOPOOL_EVENT === 'session.ready') {
  const g = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' })
  writeFileSync(${JSON.stringify(join(dir, 'pids'))}, process.pid + ' ' + g.pid)
  setTimeout(() => {}, 60000)
}
`

test('hooks run on ready and on end, in order, with the timeout enforced and the outcome audited', async () => {
  const script = join(dir, 'hook.mjs')
  writeFileSync(script, SCRIPT)
  const config = `server: { dataDir: ${JSON.stringify(join(dir, 'data'))} }
templates:
  demo:
    provider: local
    minFree: 0
    local:
      command: [node, ${JSON.stringify(DEMO_APP)}, --port, "{{port}}"]
hooks:
  - name: record
    on: [session.ready, session.ended]
    command: [node, ${JSON.stringify(script)}, record]
    env: { HOOK_TOKEN: ${TOKEN} }
  - name: slow
    on: [session.ready, session.ended]
    command: [node, ${JSON.stringify(script)}, slow]
    timeout: 1500ms
`
  // STUDIOPOOL_KEY in the server's environment must not reach a hook.
  const s = await spawnServer({ cwd: dir, config, env: { STUDIOPOOL_KEY: 'server-only-secret' }, strict: true })
  procs.push(s)
  const key = s.adminKey!
  const r = await api<{ instanceId: string }>(s.url, key, 'POST', '/api/commands', {
    command: 'REQUEST_SESSION',
    payload: { userId: 'ada' },
  })
  assert.equal(r.status < 300, true, JSON.stringify(r.body))
  const id = r.body.instanceId
  const lines = () => (existsSync(LOG) ? readFileSync(LOG, 'utf8').trim().split('\n') : [])

  await waitFor('both hooks ran on session.ready', () => lines().length >= 2, 30_000)
  const ready = lines()
    .find((l) => l.startsWith('record '))!
    .split(' ')
  assert.deepEqual(ready.slice(0, 5), ['record', 'session.ready', id, 'ada', 'demo'])
  assert.match(ready[5]!, /^\d+\.\d+\.\d+\.\d+$/, "the session's host (its own network namespace, or loopback)")
  assert.deepEqual(ready.slice(6, 9), ['-', 'session.ready', id], 'no reason yet; the same event on stdin')
  assert.equal(ready[9], `${s.url}/s/${id}/`)
  assert.equal(ready[10], 'clean', "the server's environment is not the hook's")

  // The slow run is killed at its timeout, with what it started.
  const [pid, grandchild] = (
    await waitFor('the slow hook wrote its pids', () => {
      const f = join(dir, 'pids')
      return existsSync(f) && readFileSync(f, 'utf8')
    })
  )
    .split(' ')
    .map(Number) as [number, number]
  await waitFor('the slow hook and its child are killed', () => !isAlive(pid) && !isAlive(grandchild), 15_000)

  const del = await api(s.url, key, 'DELETE', `/api/v1/instances/${id}`)
  assert.equal(del.status, 200, JSON.stringify(del.body))
  await waitFor('both hooks ran on session.ended', () => lines().length >= 4, 30_000)
  const byHook = (h: string) =>
    lines()
      .filter((l) => l.startsWith(`${h} `))
      .map((l) => l.split(' ').slice(1, 3).join(' '))
  assert.deepEqual(byHook('record'), [`session.ready ${id}`, `session.ended ${id}`], 'in event order')
  assert.deepEqual(byHook('slow'), [`session.ready ${id}`, `session.ended ${id}`], 'the next event still runs')
  const ended = lines()
    .find((l) => l.startsWith('record session.ended'))!
    .split(' ')
  assert.equal(ended[4], 'demo', 'an ended event names the template it had')
  assert.notEqual(ended[6], '-', 'and the reason')

  type Audit = { event: string; actor: string; instanceId: string; detail: Record<string, unknown> }
  const runs = await waitFor('four hook runs in the audit', async () => {
    const a = await api<{ events: Audit[] }>(s.url, key, 'GET', `/api/v1/audit?instanceId=${id}`)
    const hooks = a.body.events.filter((e) => e.event === 'hook')
    return hooks.length >= 4 && hooks
  })
  const view = runs.map((e) => `${e.actor} ${String(e.detail['on'])} ${String(e.detail['outcome'])}`).sort()
  assert.deepEqual(view, [
    'hook:record session.ended ok',
    'hook:record session.ready ok',
    'hook:slow session.ended ok',
    'hook:slow session.ready timeout',
  ])
  const timedOut = runs.find((e) => e.detail['outcome'] === 'timeout')!
  assert.ok(Number(timedOut.detail['durationMs']) >= 1500, 'killed no earlier than its timeout')
  const rec = runs.find((e) => e.actor === 'hook:record')!
  assert.equal(rec.detail['stderr'], 'token is [redacted]\n', 'stderr is kept, the env secret is not')
  assert.equal(rec.detail['exitCode'], 0)
  assert.ok(!JSON.stringify(runs).includes(TOKEN))
  const log = await api<{ deliveries: { status: string; lastError: string | null }[] }>(
    s.url,
    key,
    'GET',
    '/api/v1/webhooks/deliveries?webhook=hook:slow',
  )
  assert.deepEqual(
    log.body.deliveries.map((d) => `${d.status} ${d.lastError}`),
    ['delivered null', 'failed timed out after 1500 ms'],
    'the queue rows in the delivery log, newest first',
  )
  assert.match(s.output(), /"hook run failed"|hook run failed/, 'the timeout is logged')
})
