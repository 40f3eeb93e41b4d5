/**
 * The per-session progress stream (issue 17): a requester follows a cold start to ready over SSE
 * instead of polling GET_STATUS. Real server, real sockets, SQLite and Postgres; the fake provider
 * takes a while to start so the stream sees provisioning/starting before ready.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { dropSchemas } from '../helpers/pg.js'
import { BIN } from '../helpers/server-process.js'
import { STORES, call, startServer, waitFor, type TestServer } from './helpers.js'

const KEY = 'events-requester-key-0123456789'
const OTHER = 'events-other-requester-key-0123456789'

interface Sse {
  readonly id: string | null
  readonly event: string
  readonly data: Record<string, unknown>
}

function parse(text: string): Sse[] {
  const events: Sse[] = []
  for (const block of text.split('\n\n')) {
    const lines = block.split('\n')
    const event = lines.find((l) => l.startsWith('event: '))?.slice(7)
    const data = lines.find((l) => l.startsWith('data: '))?.slice(6)
    if (!event || !data) continue
    events.push({ id: lines.find((l) => l.startsWith('id: '))?.slice(4) ?? null, event, data: JSON.parse(data) })
  }
  return events
}

/**
 * Opens an SSE response; `events()` is what has arrived so far, `done` resolves when the server
 * closes the stream (after ready/ended).
 */
async function openStream(url: string, key: string, headers: Record<string, string> = {}) {
  const r = await request(url, {
    headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream', ...headers },
    bodyTimeout: 15_000,
  })
  let text = ''
  const done = (async () => {
    for await (const chunk of r.body) text += String(chunk)
    return { events: parse(text), text }
  })()
  return { status: r.statusCode, type: String(r.headers['content-type']), events: () => parse(text), done }
}

/** The app behind the session: its health check fails until `open()`, so a cold start waits in `starting`. */
async function gatedApp() {
  let open = false
  const srv = createServer((_req, res) => {
    res.writeHead(open ? 200 : 503, { 'content-type': 'text/plain' })
    res.end(open ? 'ok' : 'not yet')
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    open: () => (open = true),
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections()
        srv.close(() => r())
      }),
  }
}

after(dropSchemas)

/** Two requester keys; `slow` starts once its app answers healthy, `stuck` never does. */
const serverYaml = (slowUrl: string, stuckUrl: string) => `worker: { interval: 1h }
auth:
  keys:
    - { name: portal, role: requester, key: ${KEY} }
    - { name: other, role: requester, key: ${OTHER} }
templates:
  slow:
    provider: fake
    fake: { address: ${JSON.stringify(slowUrl)}, startDelayMs: 100 }
  stuck:
    provider: fake
    fake: { address: ${JSON.stringify(stuckUrl)} }
`

const ORDER = ['queued', 'provisioning', 'starting', 'ready']

for (const kind of STORES) {
  describe(`session progress stream (${kind})`, () => {
    let app: Awaited<ReturnType<typeof gatedApp>>
    let never: Awaited<ReturnType<typeof gatedApp>>
    let s: TestServer

    before(async () => {
      app = await gatedApp()
      never = await gatedApp()
      s = await startServer(kind, serverYaml(app.url, never.url))
    })
    after(async () => {
      await s?.close()
      await app?.close()
      await never?.close()
    })

    test('follows a cold start to ready, in order, and closes; a resume skips the step already seen', async () => {
      const grant = await call(s.url, 'POST', '/api/v1/sessions', {
        key: KEY,
        body: { userId: 'ada', template: 'slow' },
      })
      assert.ok(grant.status < 300, grant.text)
      const id = (grant.json as { instanceId: string }).instanceId
      const live = await openStream(`${s.url}/api/v1/instances/${id}/events?userId=ada`, KEY)
      assert.equal(live.status, 200)
      assert.match(live.type, /^text\/event-stream/)
      // Still starting (the app is not healthy yet): the stream has said so and is still open.
      await waitFor('a progress event before ready', () => live.events().some((e) => e.event === 'progress'))
      assert.ok(!live.events().some((e) => e.event === 'ready'))
      app.open()
      const stream = await live.done
      const progress = stream.events.filter((e) => e.event === 'progress')
      assert.ok(progress.length >= 2, `saw a cold start, not only the end: ${stream.text}`)
      assert.notEqual(progress[0]!.data.state, 'ready', 'the first step is before ready')
      const ranks = progress.map((e) => ORDER.indexOf(String(e.data.state)))
      assert.ok(!ranks.includes(-1), `only start states: ${ranks}`)
      assert.deepEqual(
        ranks,
        [...ranks].sort((a, b) => a - b),
        'states in lifecycle order',
      )
      assert.equal(progress.at(-1)!.data.state, 'ready')
      const last = stream.events.at(-1)!
      assert.equal(last.event, 'ready')
      const inst = last.data.instance as { instanceId: string; state: string; url: string }
      assert.equal(inst.instanceId, id)
      assert.equal(inst.state, 'ready')
      assert.ok(inst.url, 'the ready event carries the link')
      // Every progress event has an id, so a client can resume.
      assert.ok(progress.every((e) => e.id))

      // Reconnecting with the last progress id: no repeat of that step, just the ending.
      const again = await (
        await openStream(`${s.url}/api/v1/instances/${id}/events?userId=ada`, KEY, {
          'last-event-id': progress.at(-1)!.id!,
        })
      ).done
      assert.deepEqual(
        again.events.map((e) => e.event),
        ['ready'],
      )
    })

    test('a session deleted while it starts: the open stream ends with `ended` and the reason', async () => {
      const grant = await call(s.url, 'POST', '/api/v1/sessions', {
        key: KEY,
        body: { userId: 'bob', template: 'stuck' },
      })
      const id = (grant.json as { instanceId: string }).instanceId
      const live = await openStream(`${s.url}/api/v1/instances/${id}/events?userId=bob`, KEY)
      await waitFor('a progress event', () => live.events().some((e) => e.event === 'progress'))
      const del = await call(s.url, 'DELETE', `/api/v1/instances/${id}?userId=bob`, { key: KEY })
      assert.equal(del.status, 200, del.text)
      const stream = await live.done
      const last = stream.events.at(-1)!
      assert.equal(last.event, 'ended', stream.text)
      assert.equal(last.data.instanceId, id)
      assert.ok(last.data.reason, 'a reason')
      assert.ok(!stream.events.some((e) => e.event === 'ready'))
      // Opened after the end: `ended` at once.
      const late = await (await openStream(`${s.url}/api/v1/instances/${id}/events?userId=bob`, KEY)).done
      assert.deepEqual(
        late.events.map((e) => e.event),
        ['ended'],
      )
    })

    test('another requester, an unnamed owner, no key: refused like GET_STATUS (404 / 400 / 401)', async () => {
      const grant = await call(s.url, 'POST', '/api/v1/sessions', {
        key: KEY,
        body: { userId: 'cy', template: 'stuck' },
      })
      const id = (grant.json as { instanceId: string }).instanceId
      const other = await call(s.url, 'GET', `/api/v1/instances/${id}/events?userId=cy`, { key: OTHER })
      assert.equal(other.status, 404)
      assert.equal((other.json as { error: { code: string } }).error.code, 'NOT_FOUND')
      const unnamed = await call(s.url, 'GET', `/api/v1/instances/${id}/events`, { key: KEY })
      assert.equal(unnamed.status, 400)
      const anon = await call(s.url, 'GET', `/api/v1/instances/${id}/events?userId=cy`)
      assert.equal(anon.status, 401)
    })
  })
}

describe('session progress stream on shutdown (sqlite)', () => {
  test('SIGTERM-style shutdown ends an open stream cleanly (the client reconnects elsewhere)', async () => {
    const never = await gatedApp()
    const s = await startServer(
      'sqlite',
      `worker: { interval: 1h }
auth:
  keys:
    - { name: portal, role: requester, key: ${KEY} }
templates:
  stuck:
    provider: fake
    fake: { address: ${JSON.stringify(never.url)} }
`,
    )
    try {
      const grant = await call(s.url, 'POST', '/api/v1/sessions', { key: KEY, body: { userId: 'dee' } })
      assert.equal(grant.status, 202, grant.text)
      const id = (grant.json as { instanceId: string }).instanceId
      const live = await openStream(`${s.url}/api/v1/instances/${id}/events?userId=dee`, KEY)
      await waitFor('a progress event', () => live.events().some((e) => e.event === 'progress'))
      const closing = s.running.shutdown(5_000)
      const { events } = await live.done
      assert.ok(
        events.every((e) => e.event === 'progress'),
        'ended by the shutdown, not as ready or ended',
      )
      await closing
    } finally {
      await s.close()
      await never.close()
    }
  })
})

describe('studiopool request --wait follows the progress stream (CLI, real binary)', () => {
  const cli = (url: string, ...args: string[]) => {
    const child = spawn(process.execPath, [BIN, ...args, '--url', url], {
      env: { PATH: process.env.PATH ?? '', STUDIOPOOL_KEY: KEY },
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (c) => (out += String(c)))
    child.stderr.on('data', (c) => (err += String(c)))
    const done = new Promise<number | null>((r) => child.on('close', r))
    return { out: () => out, err: () => err, done, kill: () => child.kill('SIGKILL') }
  }

  test('shows each step while the session starts and exits 0 when it is ready; TIMEOUT when it never is', async () => {
    const app = await gatedApp()
    const never = await gatedApp()
    const s = await startServer('sqlite', serverYaml(app.url, never.url))
    const procs: ReturnType<typeof cli>[] = []
    try {
      const waiting = cli(s.url, 'request', '-u', 'eve', '-t', 'slow', '--wait')
      procs.push(waiting)
      // Non-TTY stderr: one line per step, from the stream (the app is not healthy yet).
      await waitFor('a progress line on stderr', () => /\d+%\s+(provisioning|starting)/.test(waiting.err()))
      assert.doesNotMatch(waiting.out(), /ready/)
      app.open()
      assert.equal(await waiting.done, 0, waiting.err())
      assert.match(waiting.out(), /^ready: open http:\/\/\S+\/s\//m)
      assert.match(waiting.err(), /100%\s+ready/)

      const stuck = cli(s.url, 'request', '-u', 'fay', '-t', 'stuck', '--wait', '--timeout', '2')
      procs.push(stuck)
      assert.notEqual(await stuck.done, 0)
      assert.match(stuck.err(), /TIMEOUT|not ready after 2s/)
    } finally {
      for (const p of procs) p.kill()
      await s.close()
      await app.close()
      await never.close()
    }
  })
})
