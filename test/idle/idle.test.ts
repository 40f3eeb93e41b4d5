/**
 * Idle culling with the real worker, the real gateway and real app processes (architecture.md
 * "Activity"): `start()` from src/main.ts with the local provider running the demo app, idle
 * timeout 3 s, worker every 250 ms, gateway activity flushed every 250 ms.
 *
 * An instance is culled after its user stops sending, and not while they keep sending (HTTP or
 * WebSocket messages); an app that pushes (server-sent events, WebSocket messages) and
 * WebSocket pings do not keep it alive; the history row says `idle`. Then the same across a
 * restart of a separate gateway process (split mode: `studiopool serve --role gateway`, fed by
 * the in-process API over SERVICE_URL with the proxy key).
 *
 * Timing: the gateway records the time it saw a request, so a session may be culled no earlier
 * than IDLE_MS after the client *sent* its last message (checked against the history row's
 * `endedAt`), and should be culled within IDLE_MS + flush + worker interval + slack.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { killAll } from '../helpers/server-process.js'
import { freePort, waitFor } from '../helpers/wait.js'
import pino from 'pino'
import { Agent, request } from 'undici'
import WebSocket from 'ws'
import { loadConfig } from '../../src/config/load.js'
import { start, type Running } from '../../src/main.js'

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..')
const BIN = join(ROOT, 'bin/studiopool.js')
const DEMO = join(ROOT, 'src/demo-app/server.mjs')
const PUSHER = join(ROOT, 'test/idle/fixtures/pusher.mjs')
const IDLE_MS = 3000
/** Latest acceptable cull: the timeout, one activity flush, one worker pass, and slack for a busy machine. */
const LATE_MS = 4000
const SECRET = 'idle-test-gateway-secret-0123456789abcdef'
const PROXY_KEY = 'idle-test-proxy-key-0123456789abcdefgh'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface HistoryRow {
  instanceId: string
  userId: string
  endedAt: string | null
  endReason: string | null
}

describe('idle culling with the real worker and gateway', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sp-idle-'))
  const dataDir = join(dir, 'data')
  const client = new Agent({ keepAliveTimeout: 1000 })
  const sockets: WebSocket[] = []
  const children: ChildProcess[] = []
  let running: Running
  let adminKey = ''
  let base = ''

  before(async () => {
    const text = `
server:
  logLevel: warn
store:
  driver: sqlite
  path: ${JSON.stringify(join(dir, 'pool.db'))}
auth:
  keys:
    - { name: gateway, role: proxy, key: ${PROXY_KEY} }
worker:
  interval: 250ms
gateway:
  activityFlush: 250ms
  secret: ${SECRET}
templates:
  demo:
    provider: local
    minFree: 0
    maxInstances: 10
    idleTimeout: 3s
    startTimeout: 30s
    healthPath: /healthz
    pathMode: strip
    local:
      command: [node, ${JSON.stringify(DEMO)}, --port, "{{port}}", --base-path, "{{basePath}}"]
      stopGrace: 2s
  pusher:
    provider: local
    minFree: 0
    maxInstances: 10
    idleTimeout: 3s
    startTimeout: 30s
    healthPath: /healthz
    pathMode: strip
    local:
      command: [node, ${JSON.stringify(PUSHER)}, --port, "{{port}}"]
      stopGrace: 2s
`
    const config = loadConfig({ text, env: {}, cwd: dir, overrides: { port: 0, dataDir } })
    running = await start({ config, log: pino({ level: 'silent' }), onBootstrapKey: (key) => (adminKey = key) })
    base = running.url
    assert.ok(adminKey, 'the first start creates an admin key')
  })

  after(async () => {
    for (const ws of sockets) ws.terminate()
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null && c.pid) {
        try {
          process.kill(c.pid, 'SIGKILL')
        } catch {
          // already gone
        }
      }
    }
    await running?.close()
    killAll(dataDir) // the session processes, by process group
    await client.close()
    rmSync(dir, { recursive: true, force: true })
  })

  async function api(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: any }> {
    const r = await request(`${base}${path}`, {
      method,
      dispatcher: client,
      headers: { authorization: `Bearer ${adminKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    })
    return { status: r.statusCode, json: await r.body.json() }
  }

  async function state(id: string): Promise<string> {
    const r = await api('GET', `/api/v1/instances/${id}`)
    assert.equal(r.status, 200, JSON.stringify(r.json))
    return r.json.instance.state
  }

  async function historyRow(id: string): Promise<HistoryRow | undefined> {
    const r = await api('GET', `/api/v1/history?instanceId=${id}`)
    assert.equal(r.status, 200, JSON.stringify(r.json))
    return (r.json.history as HistoryRow[]).find((h) => h.instanceId === id)
  }

  /** A ready session of `template` for `userId`, and its cookie, redeemed through the gateway at `gw`. */
  async function session(userId: string, template = 'demo', gw = base): Promise<{ id: string; cookie: string }> {
    const r = await api('POST', '/api/v1/sessions', { userId, template })
    // 200 for a ready session, 202 while it starts (the gateway's launch page waits for it).
    assert.equal(r.status, r.json.state === 'ready' ? 200 : 202, JSON.stringify(r.json))
    const id: string = r.json.instanceId
    const launch = new URL(r.json.url)
    const res = await request(`${gw}${launch.pathname}${launch.search}`, { dispatcher: client })
    await res.body.dump()
    assert.equal(res.statusCode, 302, 'the launch link is traded for a cookie')
    const cookie = String(res.headers['set-cookie'] ?? '').split(';')[0]!
    assert.match(cookie, /^[a-z_]+=v1\./)
    await waitFor(`${userId}'s session to be ready`, async () => (await state(id)) === 'ready', 30_000)
    return { id, cookie }
  }

  /** One request through the gateway; the demo app's request counter proves the app answered. */
  async function hit(gw: string, id: string, cookie: string): Promise<void> {
    const r = await request(`${gw}/s/${id}/counter`, { dispatcher: client, headers: { cookie } })
    const body = await r.body.text()
    assert.equal(r.statusCode, 200, body)
    assert.ok(typeof JSON.parse(body).requests === 'number', body)
  }

  async function openWs(
    gw: string,
    id: string,
    cookie: string,
    path = '/ws',
  ): Promise<{ ws: WebSocket; messages: string[]; closed: Promise<void> }> {
    const ws = new WebSocket(`${gw.replace(/^http/, 'ws')}/s/${id}${path}`, { headers: { cookie, origin: gw } })
    sockets.push(ws)
    const messages: string[] = []
    ws.on('message', (d) => messages.push(d.toString()))
    const closed = new Promise<void>((r) => ws.once('close', () => r()))
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    return { ws, messages, closed }
  }

  /** Waits for the idle cull and checks when it came: not before IDLE_MS after `lastSentAt`, not long after. */
  async function assertCulledOnTime(id: string, lastSentAt: number): Promise<HistoryRow> {
    const row = await waitFor(
      'the idle cull',
      async () => {
        const h = await historyRow(id)
        return h?.endedAt ? h : undefined
      },
      IDLE_MS + LATE_MS + 5000,
    )
    assert.equal(row.endReason, 'idle')
    const after = Date.parse(row.endedAt!) - lastSentAt
    assert.ok(
      after >= IDLE_MS,
      `culled ${after} ms after the last client message, before the ${IDLE_MS} ms idle timeout`,
    )
    assert.ok(
      after <= IDLE_MS + LATE_MS,
      `culled ${after} ms after the last client message, later than ${IDLE_MS + LATE_MS} ms`,
    )
    const s = await state(id)
    assert.ok(s === 'stopping' || s === 'terminated', `state after the cull: ${s}`)
    return row
  }

  /** Every second for twice the idle timeout: do `send`, and check the session is still live and assigned. */
  async function keepSending(id: string, send: () => Promise<void>): Promise<number> {
    const until = Date.now() + 2 * IDLE_MS + 500
    let lastSentAt = 0
    let n = 0
    while (Date.now() < until) {
      lastSentAt = Date.now()
      await send()
      n++
      assert.equal(await state(id), 'ready', `culled while the user was active (after ${n} sends)`)
      assert.equal((await historyRow(id))?.endedAt, null, 'the assignment is still open')
      await sleep(1000 - (Date.now() - lastSentAt))
    }
    assert.ok(n >= 6, `sent ${n} times`)
    return lastSentAt
  }

  test('HTTP: not culled while the user sends a request every second for twice the timeout; culled on time after they stop', async (t) => {
    const { id, cookie } = await session('http-user')
    const lastSentAt = await keepSending(id, () => hit(base, id, cookie))
    const row = await assertCulledOnTime(id, lastSentAt)
    t.diagnostic(`culled ${Date.parse(row.endedAt!) - lastSentAt} ms after the last request`)
    // The session is gone for the user too: the gateway no longer forwards to it.
    const r = await request(`${base}/s/${id}/counter`, { dispatcher: client, headers: { cookie, accept: 'text/html' } })
    await r.body.dump()
    assert.notEqual(r.statusCode, 200)
  })

  test('WebSocket: not culled while the user sends a message every second; culled on time after they stop, with the socket open', async (t) => {
    const { id, cookie } = await session('ws-user')
    const c = await openWs(base, id, cookie)
    let i = 0
    const lastSentAt = await keepSending(id, async () => {
      const want = `hello ${i++}`
      c.ws.send(want)
      await waitFor('the echo', async () => c.messages.includes(want), 5000)
    })
    // Still connected, and quiet: the open socket alone does not count.
    assert.equal(c.ws.readyState, WebSocket.OPEN)
    const row = await assertCulledOnTime(id, lastSentAt)
    t.diagnostic(`culled ${Date.parse(row.endedAt!) - lastSentAt} ms after the last message`)
    await waitFor('the culled session’s WebSocket to close', async () => c.ws.readyState === WebSocket.CLOSED, 10_000)
  })

  test('server-sent events held open through the gateway do not keep a session alive', async (t) => {
    const { id, cookie } = await session('sse-user')
    const sentAt = Date.now()
    const res = await request(`${base}/s/${id}/sse?n=300&interval=200`, {
      dispatcher: client,
      headers: { cookie, accept: 'text/event-stream' },
    })
    assert.equal(res.statusCode, 200)
    assert.match(String(res.headers['content-type']), /text\/event-stream/)
    const events: number[] = []
    const reading = (async () => {
      try {
        for await (const chunk of res.body) for (const _ of String(chunk).matchAll(/^data: /gm)) events.push(Date.now())
      } catch {
        // the stream ends with the session
      }
    })()
    const row = await assertCulledOnTime(id, sentAt)
    const endedAt = Date.parse(row.endedAt!)
    assert.ok(events.length >= 10, `the app pushed ${events.length} events`)
    assert.ok(
      events.some((at) => at >= endedAt - 1000),
      'the app was still pushing in the last second before the cull',
    )
    await reading
    t.diagnostic(`${events.length} events pushed; culled ${endedAt - sentAt} ms after the request`)
  })

  test('WebSocket pings from the client do not keep a session alive', async (t) => {
    const { id, cookie } = await session('ping-user')
    const sentAt = Date.now() // the upgrade is the last activity
    const c = await openWs(base, id, cookie)
    let pongs = 0
    c.ws.on('pong', () => pongs++)
    const pinger = setInterval(() => c.ws.readyState === WebSocket.OPEN && c.ws.ping(), 200)
    try {
      const row = await assertCulledOnTime(id, sentAt)
      assert.ok(pongs >= 10, `${pongs} pongs came back through the gateway`)
      t.diagnostic(`${pongs} ping/pong round trips; culled ${Date.parse(row.endedAt!) - sentAt} ms after the upgrade`)
    } finally {
      clearInterval(pinger)
    }
  })

  test('an app that pushes WebSocket messages does not keep a session alive', async (t) => {
    const { id, cookie } = await session('push-user', 'pusher')
    const sentAt = Date.now()
    const c = await openWs(base, id, cookie, '/')
    const row = await assertCulledOnTime(id, sentAt)
    const pushed = c.messages.filter((m) => m.startsWith('{"push"')).length
    assert.ok(pushed >= 10, `the app pushed ${pushed} messages through the gateway`)
    t.diagnostic(`${pushed} messages pushed; culled ${Date.parse(row.endedAt!) - sentAt} ms after the upgrade`)
  })

  describe('split mode: the gateway as its own process, restarted', () => {
    let gwPort = 0
    let gwBase = ''
    const gwDir = join(dir, 'gateway')

    async function startGatewayProcess(): Promise<{ child: ChildProcess; output: () => string; startedIn: number }> {
      const t0 = Date.now()
      const child = spawn(
        process.execPath,
        [BIN, 'serve', '--role', 'gateway', '--config', join(gwDir, 'studiopool.yaml'), '--port', String(gwPort)],
        {
          cwd: gwDir,
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            HOME: gwDir,
            SERVICE_URL: base,
            PROXY_KEY,
            STUDIOPOOL_SECRET: SECRET,
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      )
      children.push(child)
      let out = ''
      child.stdout!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-20_000)))
      child.stderr!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-20_000)))
      const deadline = Date.now() + 30_000
      for (;;) {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the gateway process exited:\n${out}`)
        const up = await request(`${gwBase}/s/${'a'.repeat(20)}/`, { dispatcher: client }).then(
          async (r) => (await r.body.dump(), true),
          () => false,
        )
        if (up) break
        if (Date.now() > deadline) throw new Error(`the gateway process did not listen within 30 s:\n${out}`)
        await sleep(20)
      }
      return { child, output: () => out, startedIn: Date.now() - t0 }
    }

    async function stopGatewayProcess(child: ChildProcess): Promise<void> {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise<void>((r) => child.once('exit', () => r()))
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(t)
    }

    before(async () => {
      gwPort = await freePort()
      gwBase = `http://127.0.0.1:${gwPort}`
      // Only what the gateway role reads: its own flush interval (the rest comes from the environment).
      const { mkdirSync } = await import('node:fs')
      mkdirSync(gwDir, { recursive: true })
      writeFileSync(
        join(gwDir, 'studiopool.yaml'),
        'server:\n  logLevel: warn\ngateway:\n  activityFlush: 250ms\ntemplates:\n  demo:\n    provider: fake\n',
      )
    })

    test('activity through a restarted gateway keeps the session; once the user stops it is culled on time', async (t) => {
      let gw = await startGatewayProcess()
      const { id, cookie } = await session('split-user', 'demo', gwBase)
      // The gateway learns of the session from the API's route stream.
      await waitFor(
        'the gateway to route the session',
        async () =>
          (await request(`${gwBase}/s/${id}/counter`, { dispatcher: client, headers: { cookie } }).then(
            async (r) => (await r.body.dump(), r.statusCode),
          )) === 200,
        5000,
      )

      const restartAfter = Date.now() + IDLE_MS
      let restarted = false
      let restartGap = 0
      const lastSentAt = await keepSending(id, async () => {
        await hit(gwBase, id, cookie)
        if (!restarted && Date.now() >= restartAfter) {
          // Restart: the old process flushes what it has and exits; a new one takes the same port.
          restarted = true
          const t0 = Date.now()
          await stopGatewayProcess(gw.child)
          gw = await startGatewayProcess()
          let lastStatus = 0
          await waitFor(
            'the new gateway to route the session',
            async () =>
              (lastStatus = await request(`${gwBase}/s/${id}/counter`, {
                dispatcher: client,
                headers: { cookie },
              }).then(async (r) => (await r.body.dump(), r.statusCode))) === 200,
            5000,
          ).catch((err: Error) => {
            throw new Error(`${err.message} (last status ${lastStatus})\n${gw.output()}`)
          })
          restartGap = Date.now() - t0
        }
      })
      assert.ok(restarted, 'the gateway was restarted while the user was active')
      assert.ok(
        restartGap < IDLE_MS,
        `the restart took ${restartGap} ms, longer than the idle timeout: the test cannot tell`,
      )
      // Keep going a little through the new process, then stop.
      let last = lastSentAt
      for (let i = 0; i < 2; i++) {
        await sleep(1000)
        last = Date.now()
        await hit(gwBase, id, cookie)
        assert.equal(await state(id), 'ready')
      }
      const row = await assertCulledOnTime(id, last)
      t.diagnostic(
        `gateway restart took ${restartGap} ms (new process listening in ${gw.startedIn} ms); culled ${Date.parse(row.endedAt!) - last} ms after the last request`,
      )
      await stopGatewayProcess(gw.child)
    })
  })
})
