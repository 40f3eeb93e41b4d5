/**
 * Slow clients and shutdown (issue 9 item 9), with the real binary and real sockets:
 * - a client that announces a large body and sends a byte at a time is answered 408
 *   REQUEST_TIMEOUT and closed after server.bodyTimeout;
 * - on SIGTERM: a new connection is refused (or gets 503) while an in-flight slow request through
 *   the gateway still completes; a proxied WebSocket sees close code 1001 at the browser's end and
 *   at the app's end; the API's SSE stream ends cleanly; the process exits 0 within the grace.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { WebSocket, WebSocketServer } from 'ws'
import { api, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'

const ARENA = 'shutdown-requester-key-0123456789'
const PROXY = 'shutdown-proxy-key-0123456789'

/** The app behind the session: `/` for the health probe, `/slow` answers when released, `/ws` a WebSocket echo. */
async function startApp() {
  let release: (() => void) | undefined
  const released = new Promise<void>((r) => (release = r))
  let slowArrived = false
  const srv = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/slow') {
      slowArrived = true
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first half, ')
      void released.then(() => res.end('second half'))
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
  })
  const wss = new WebSocketServer({ server: srv, path: '/ws' })
  const upstreamCloses: number[] = []
  wss.on('connection', (ws) => {
    ws.on('message', (m, binary) => ws.send(m, { binary }))
    ws.on('close', (code) => upstreamCloses.push(code))
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    release: () => release!(),
    slowArrived: () => slowArrived,
    upstreamCloses,
    async close() {
      release!()
      for (const c of wss.clients) c.terminate()
      wss.close()
      srv.closeAllConnections()
      await new Promise<void>((r) => srv.close(() => r()))
    },
  }
}

describe('slow clients and shutdown (the binary, real sockets)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sp-shutdown-'))
  let app: Awaited<ReturnType<typeof startApp>>
  let s: ServerProcess

  before(async () => {
    app = await startApp()
    s = await spawnServer({
      cwd: dir,
      env: { ARENA_POOL_SERVICE_KEY: ARENA, PROXY_KEY: PROXY },
      config: `server: { dataDir: ${JSON.stringify(join(dir, 'data'))}, bodyTimeout: 2s, shutdownGrace: 20s }
worker: { interval: 1s }
templates:
  demo:
    provider: fake
    fake: { address: ${JSON.stringify(app.url)} }
`,
    })
  })
  after(async () => {
    await s?.kill('SIGKILL')
    await app?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  test('a body that trickles in is answered 408 REQUEST_TIMEOUT and closed after server.bodyTimeout', async () => {
    const u = new URL(s.url)
    const t0 = performance.now()
    const reply = await new Promise<string>((resolve, reject) => {
      const sock = connect(Number(u.port), u.hostname, () => {
        sock.write(
          `POST /api/v1/sessions HTTP/1.1\r\nhost: ${u.host}\r\nauthorization: Bearer ${ARENA}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{`,
        )
      })
      const drip = setInterval(() => sock.writable && sock.write(' '), 300)
      let out = ''
      sock.on('data', (d) => (out += d.toString()))
      sock.on('close', () => {
        clearInterval(drip)
        resolve(out)
      })
      sock.on('error', (err) => {
        clearInterval(drip)
        if (out) resolve(out)
        else reject(err)
      })
    })
    const ms = performance.now() - t0
    assert.match(reply, /^HTTP\/1\.1 408 /)
    assert.match(reply, /"code":"REQUEST_TIMEOUT"/)
    assert.ok(ms >= 1900 && ms < 6000, `closed after ${ms} ms`)
  })

  test('SIGTERM: new connections refused, in-flight request completes, WebSockets get 1001, SSE ends, exit 0', async () => {
    // An established session with a cookie.
    const grant = await api(s.url, ARENA, 'POST', '/api/v1/sessions', { userId: 'alice' })
    assert.equal(grant.status, grant.body.state === 'ready' ? 200 : 202, JSON.stringify(grant.body))
    const id = grant.body.instanceId as string
    await waitFor(
      'ready',
      async () =>
        (await api(s.url, ARENA, 'GET', `/api/v1/instances/${id}?userId=alice`)).body.instance?.state === 'ready',
      20_000,
    )
    const launch = await request(grant.body.url as string)
    await launch.body.dump()
    const cookie = String(launch.headers['set-cookie']).split(';')[0]!
    const session = new URL(String(launch.headers.location), s.url).href

    // A WebSocket through the gateway.
    const ws = new WebSocket(`${session.replace(/^http/, 'ws')}ws`, { headers: { cookie, origin: s.url } })
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    const echoed = new Promise<string>((r) => ws.once('message', (m) => r(m.toString())))
    ws.send('hello')
    assert.equal(await echoed, 'hello')
    const closed = new Promise<{ code: number; reason: string }>((r) =>
      ws.once('close', (code, reason) => r({ code, reason: reason.toString() })),
    )

    // The API's own SSE stream (the split-mode gateway feed).
    const sse = await request(`${s.url}/api/v1/gateway/routes`, { headers: { authorization: `Bearer ${PROXY}` } })
    assert.equal(sse.statusCode, 200)
    const sseDone = (async () => {
      let text = ''
      for await (const chunk of sse.body) text += chunk.toString()
      return text
    })()

    // An in-flight slow request through the gateway.
    const slow = request(`${session}slow`, { headers: { cookie }, dispatcher: new Agent() }).then(async (r) => ({
      status: r.statusCode,
      text: await r.body.text(),
    }))
    await waitFor('the slow request at the app', () => app.slowArrived(), 10_000)

    const exited = new Promise<number | null>((r) => s.child.once('exit', (code) => r(code)))
    s.child.kill('SIGTERM')

    // Close frames 1001 at both ends.
    const c = await closed
    assert.equal(c.code, 1001, `the browser's WebSocket closed with ${c.code}`)
    await waitFor('the app to see the close', () => app.upstreamCloses.length > 0, 5_000)
    assert.deepEqual(app.upstreamCloses, [1001])

    // The SSE stream ended, without an error.
    const text = await sseDone
    assert.match(text, /event: reset/)

    // A new connection is refused (or answered 503) while the slow request is still in flight.
    const refused = await waitFor(
      'a new connection to be refused',
      async () => {
        try {
          const r = await request(`${s.url}/readyz`, { dispatcher: new Agent(), headersTimeout: 2000 })
          await r.body.dump()
          return r.statusCode === 503 ? 'readyz 503' : undefined
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code
          return code === 'ECONNREFUSED' || code === 'UND_ERR_SOCKET' ? code : undefined
        }
      },
      5_000,
    )
    assert.ok(refused)
    assert.equal(s.child.exitCode, null, 'still running while a request is in flight')

    app.release()
    const done = await slow
    assert.equal(done.status, 200)
    assert.equal(done.text, 'first half, second half', 'the in-flight request completed whole')
    assert.equal(await exited, 0)
  })
})
