/**
 * Split mode with the real binary (architecture.md "One package, one binary, several roles"):
 * `studiopool serve --role api`, `--role worker` and `--role gateway` as three processes sharing a
 * SQLite store and a data dir, sessions on the local provider running the shipped demo app.
 * A session requested from the API works through the gateway within 1 s of being ready; the gateway
 * keeps serving it while the API is killed (SIGKILL); after the API restarts, the gateway resyncs
 * and a session requested then is routable too.
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
import { Agent, request } from 'undici'

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..')
const BIN = join(ROOT, 'bin/studiopool.js')
const DEMO = join(ROOT, 'src/demo-app/server.mjs')
const ARENA = 'split-test-requester-key-0123456789'
const PROXY = 'split-test-proxy-key-0123456789'
const SECRET = 'split-test-gateway-secret-0123456789abcdef'

interface Proc {
  readonly name: string
  readonly child: ChildProcess
  output: string
  readonly exited: Promise<void>
}

describe('split mode: api, worker and gateway as separate processes of the binary', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sp-split-'))
  const dataDir = join(dir, 'data')
  const procs: Proc[] = []
  const client = new Agent({ keepAliveTimeout: 1000 })
  let apiPort = 0
  let gwPort = 0
  let api: Proc | undefined
  const apiUrl = () => `http://127.0.0.1:${apiPort}`
  const gwUrl = () => `http://127.0.0.1:${gwPort}`

  function run(name: string, role: string, port: number | null, env: Record<string, string>): Proc {
    const args = [
      BIN,
      'serve',
      '--role',
      role,
      '--config',
      join(dir, 'studiopool.yaml'),
      ...(port ? ['--port', String(port)] : []),
    ]
    const child = spawn(process.execPath, args, {
      cwd: dir,
      // A clean environment: only what the roles are meant to read.
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: process.env.HOME ?? dir,
        PROXY_KEY: PROXY,
        STUDIOPOOL_SECRET: SECRET,
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const p: Proc = {
      name,
      child,
      output: '',
      exited: new Promise<void>((r) => child.once('exit', () => r())),
    }
    const keep = (b: Buffer) => {
      p.output = (p.output + b.toString()).slice(-20_000)
    }
    child.stdout!.on('data', keep)
    child.stderr!.on('data', keep)
    procs.push(p)
    return p
  }

  const alive = (p: Proc | undefined) => !!p && p.child.exitCode === null && p.child.signalCode === null
  async function kill(p: Proc | undefined, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!alive(p)) return
    p!.child.kill(signal)
    await p!.exited
  }

  const startApi = async () => {
    const p = run('api', 'api', apiPort, { ARENA_POOL_SERVICE_KEY: ARENA, STUDIOPOOL_PUBLIC_URL: gwUrl() })
    await waitFor(
      'the api role to be ready',
      async () => {
        if (!alive(p)) throw new Error(`api exited:\n${p.output}`)
        const r = await request(`${apiUrl()}/readyz`, { dispatcher: client })
        await r.body.dump()
        return r.statusCode === 200
      },
      30_000,
    )
    return p
  }

  async function cmd(command: string, payload: unknown): Promise<{ status: number; json: any }> {
    const r = await request(`${apiUrl()}/`, {
      method: 'POST',
      dispatcher: client,
      headers: { authorization: `Bearer ${ARENA}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command, payload }),
    })
    return { status: r.statusCode, json: await r.body.json() }
  }

  /** Follows the launch URL once: the gateway trades the token for a cookie and redirects to the clean URL. */
  async function redeem(launch: string, id: string): Promise<string> {
    const u = new URL(launch)
    assert.equal(u.origin, gwUrl(), 'the launch URL points at the gateway (server.publicUrl)')
    const r = await request(launch, { dispatcher: client })
    await r.body.dump()
    assert.equal(r.statusCode, 302, `launch redemption: ${r.statusCode}`)
    assert.equal(new URL(String(r.headers.location), launch).href, `${gwUrl()}/s/${id}/`)
    const setCookie = String(r.headers['set-cookie'] ?? '')
    assert.ok(setCookie, 'a session cookie')
    return setCookie.split(';')[0]!
  }

  /** The demo page of this instance, through the gateway; undefined while it is not served. */
  async function page(id: string, cookie: string): Promise<string | undefined> {
    const r = await request(`${gwUrl()}/s/${id}/`, { dispatcher: client, headers: { cookie, accept: 'text/html' } })
    const text = await r.body.text()
    return r.statusCode === 200 && text.includes(`studiopool demo session ${id}`) ? text : undefined
  }

  before(async () => {
    apiPort = await freePort()
    gwPort = await freePort()
    writeFileSync(
      join(dir, 'studiopool.yaml'),
      `server:
  dataDir: ${JSON.stringify(dataDir)}
  logLevel: warn
store:
  driver: sqlite
  path: ${JSON.stringify(join(dir, 'pool.db'))}
worker:
  interval: 1s
templates:
  demo:
    provider: local
    minFree: 0
    maxInstances: 5
    healthPath: /healthz
    startTimeout: 30s
    pathMode: strip
    local:
      command: [node, ${JSON.stringify(DEMO)}, --port, "{{port}}", --base-path, "{{basePath}}"]
      stopGrace: 2s
`,
    )
    api = await startApi()
    // The worker role listens too (its probes, issue 9 item 10): on a free port, not the default 8080.
    run('worker', 'worker', await freePort(), {})
    run('gateway', 'gateway', gwPort, { SERVICE_URL: apiUrl() })
    await waitFor(
      'the gateway role to listen',
      async () => {
        const r = await request(`${gwUrl()}/s/${'a'.repeat(20)}/`, { dispatcher: client })
        await r.body.dump()
        return r.statusCode > 0
      },
      30_000,
    )
  })

  after(async () => {
    for (const p of procs) await kill(p)
    killAll(dataDir) // the session processes, by process group
    await client.close()
    rmSync(dir, { recursive: true, force: true })
  })

  let aliceId = ''
  let aliceCookie = ''

  test('a session requested from the API works through the gateway within 1 s of being ready', async () => {
    const r = await cmd('REQUEST_RSTUDIO', { userId: 'alice' })
    assert.equal(r.status, 200, JSON.stringify(r.json))
    aliceId = r.json.instanceId
    aliceCookie = await redeem(r.json.url, aliceId)
    // Ready according to the API…
    await waitFor(
      'alice ready',
      async () => (await cmd('GET_STATUS', { instanceId: aliceId, userId: 'alice' })).json.instance?.state === 'ready',
      30_000,
    )
    const readyAt = performance.now()
    // …and served by the gateway (a separate process fed over the route stream) within 1 s.
    await waitFor('the gateway to serve the ready session', () => page(aliceId, aliceCookie), 1000)
    const took = performance.now() - readyAt
    assert.ok(took < 1000, `took ${Math.round(took)} ms`)
    // Without the cookie, the session is not reachable.
    const anon = await request(`${gwUrl()}/s/${aliceId}/`, { dispatcher: client })
    await anon.body.dump()
    assert.ok(anon.statusCode === 401 || anon.statusCode === 403, `anonymous: ${anon.statusCode}`)
  })

  test('kill -9 the API: the existing session still works through the gateway', async () => {
    assert.ok(aliceId, 'needs the first test')
    await kill(api, 'SIGKILL')
    await assert.rejects(request(`${apiUrl()}/healthz`, { dispatcher: client }).then((r) => r.body.dump()))
    for (let i = 0; i < 5; i++)
      assert.ok(await page(aliceId, aliceCookie), `request ${i} through the gateway while the API is down`)
    // The session's WebSocket-free HTTP API of the demo app too (a path below the prefix).
    const echo = await request(`${gwUrl()}/s/${aliceId}/echo?x=1`, {
      dispatcher: client,
      headers: { cookie: aliceCookie },
    })
    await echo.body.dump()
    assert.equal(echo.statusCode, 200)
  })

  test('restart the API: the gateway resyncs and a new session becomes routable', async () => {
    assert.ok(aliceId, 'needs the first test')
    api = await startApi()
    const r = await cmd('REQUEST_RSTUDIO', { userId: 'bob' })
    assert.equal(r.status, 200, JSON.stringify(r.json))
    const bobId: string = r.json.instanceId
    assert.notEqual(bobId, aliceId)
    // Redeeming needs the API's nonce ledger, so this also shows the gateway talks to the new API process.
    const bobCookie = await waitFor(
      'bob’s launch link',
      async () => redeem(r.json.url, bobId).catch(() => undefined),
      10_000,
    )
    await waitFor('bob’s session through the gateway', () => page(bobId, bobCookie), 30_000)
    assert.ok(await page(aliceId, aliceCookie), 'alice’s session still works')
    // The restarted API still knows alice's session.
    assert.equal((await cmd('GET_STATUS', { instanceId: aliceId, userId: 'alice' })).json.instance.state, 'ready')
    // Both are this pool's processes, still alive.
    for (const p of procs.filter((x) => x.name !== 'api' || x === api))
      assert.ok(alive(p), `${p.name} exited:\n${p.output}`)
  })
})
