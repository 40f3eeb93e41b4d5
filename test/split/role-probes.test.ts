/**
 * Every role can be probed (issue 9 item 10), with the real binary: `serve --role worker` and
 * `--role gateway` answer /healthz, /readyz and /metrics on their own port (the worker used to listen
 * nowhere while printing `listening on …`; the gateway answered 404), each banner names only what
 * the role serves, and /readyz is 503 with reasons when it cannot serve: the gateway before its
 * first route table, any API when no template can serve. Run on both stores where a store is used.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'
import { dropSchemas, freshPgUrl } from '../helpers/pg.js'
import { STORES, type StoreKind } from '../api/helpers.js'

after(dropSchemas)

const PROXY = 'role-probes-proxy-key-0123456789'
const SECRET = 'role-probes-gateway-secret-0123456789abcdef'

const procs: ServerProcess[] = []
const dirs: string[] = []
after(async () => {
  for (const p of procs) await p.kill()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

async function get(url: string, key?: string): Promise<{ status: number; text: string; json: any }> {
  const r = await request(url, { headers: key ? { authorization: `Bearer ${key}` } : {} })
  const text = await r.body.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: r.statusCode, text, json }
}

async function storeYaml(kind: StoreKind, dir: string): Promise<string> {
  return kind === 'sqlite'
    ? `store: { driver: sqlite, path: ${JSON.stringify(join(dir, 'studiopool.db'))} }\n`
    : `store: { driver: postgres, url: ${JSON.stringify(await freshPgUrl())} }\n`
}

async function serve(
  kind: StoreKind,
  role: string,
  templates: string,
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const dir = mkdtempSync(join(tmpdir(), `sp-role-${role}-`))
  dirs.push(dir)
  const p = await spawnServer({
    cwd: dir,
    // A template that cannot serve is part of what these probes show: --degraded starts anyway.
    args: ['--role', role, '--degraded'],
    env: { PROXY_KEY: PROXY, STUDIOPOOL_SECRET: SECRET, ...env },
    config: `${await storeYaml(kind, dir)}server: { dataDir: ${JSON.stringify(join(dir, 'data'))} }\nworker: { interval: 1s }\ntemplates:\n${templates}`,
  })
  procs.push(p)
  return p
}

const BANNER = /listening on (\S+)\s+\(([^)]*)\)/

for (const kind of STORES) {
  describe(`role probes (${kind})`, () => {
    test('--role worker listens for /healthz, /readyz and /metrics only; its banner says so', async () => {
      const w = await serve(kind, 'worker', '  demo:\n    provider: fake\n')
      const banner = BANNER.exec(w.output())!
      assert.ok(banner, w.output())
      assert.match(banner[2]!, /health only/)
      assert.doesNotMatch(banner[2]!, /dashboard|API docs|sessions/)
      assert.equal((await get(`${w.url}/healthz`)).status, 200)
      const ready = await get(`${w.url}/readyz`)
      assert.equal(ready.status, 200, ready.text)
      assert.equal(ready.json.checks.store, 'ok')
      assert.equal(ready.json.checks.worker, 'ok')
      assert.equal((await get(`${w.url}/metrics`)).status, 401)
      const m = await get(`${w.url}/metrics`, PROXY)
      assert.equal(m.status, 200)
      assert.match(m.text, /studiopool_worker_cycle_seconds/)
      assert.equal((await get(`${w.url}/api/v1/templates`, PROXY)).status, 404, 'no API on the worker port')
    })

    test('/readyz is 503 with reasons when no template can serve (api and worker roles)', async () => {
      const broken = '  broken:\n    provider: fake\n    fake: { validationError: "the image does not exist" }\n'
      for (const role of ['all', 'worker']) {
        const p = await serve(kind, role, broken)
        const r = await get(`${p.url}/readyz`)
        assert.equal(r.status, 503, `${role}: ${r.text}`)
        assert.equal(r.json.checks.templates, 'no template can serve')
        assert.match(r.json.checks['template:broken'], /unavailable: .*the image does not exist/)
        assert.equal((await get(`${p.url}/healthz`)).status, 200, 'alive all the same')
        await p.kill()
      }
    })
  })
}

describe('role probes: --role gateway', () => {
  test('answers /healthz, /readyz (503 until it has a route table) and /metrics instead of 404; banner names sessions', async () => {
    const kind = STORES[0]!
    // The gateway first, pointed at an API that is not there yet.
    const apiDir = mkdtempSync(join(tmpdir(), 'sp-role-api-'))
    dirs.push(apiDir)
    const { freePort } = await import('../helpers/wait.js')
    const apiPort = await freePort()
    const g = await serve(kind, 'gateway', '  demo:\n    provider: fake\n', {
      SERVICE_URL: `http://127.0.0.1:${apiPort}`,
    })
    const banner = BANNER.exec(g.output())!
    assert.ok(banner, g.output())
    assert.match(banner[2]!, /sessions .*\/s\//)
    assert.doesNotMatch(banner[2]!, /dashboard|API docs/)
    assert.equal((await get(`${g.url}/healthz`)).status, 200)
    const notYet = await get(`${g.url}/readyz`)
    assert.equal(notYet.status, 503, notYet.text)
    assert.match(notYet.json.checks.routes, /no route table/)
    assert.equal((await get(`${g.url}/metrics`)).status, 401)
    const m = await get(`${g.url}/metrics`, PROXY)
    assert.equal(m.status, 200)
    assert.match(m.text, /studiopool_gateway_/)

    // The API comes up on that port: the gateway gets its table and becomes ready.
    const a = await spawnServer({
      cwd: apiDir,
      args: ['--role', 'api', '--port', String(apiPort)],
      env: { PROXY_KEY: PROXY, STUDIOPOOL_SECRET: SECRET },
      config: `${await storeYaml(kind, apiDir)}server: { dataDir: ${JSON.stringify(join(apiDir, 'data'))} }\ntemplates:\n  demo:\n    provider: fake\n`,
    })
    procs.push(a)
    await waitFor('the gateway ready', async () => (await get(`${g.url}/readyz`)).status === 200, 20_000)
    // A session path named like a probe still goes to the session handling, not the probes.
    assert.notEqual((await get(`${g.url}/s/${'a'.repeat(20)}/healthz`)).text, '{"status":"ok"}')
  })
})

/**
 * Issue 9 item 4's finding, "40 simultaneous cold starts raised a running session's gateway latency
 * (p99 274 ms, max 2.4 s)": in one process the gateway shares its event loop with synchronous work
 * (SQLite calls, process spawning). The remedy documented in the README is the gateway role in its
 * own process; this shows that it keeps serving an established session at full speed while the
 * API process is frozen outright (SIGSTOP), the worst case of a busy event loop.
 */
describe('the gateway role is isolated from the API process', () => {
  test('an established session is served while the API process is SIGSTOPped', async () => {
    const kind = STORES[0]!
    const { freePort } = await import('../helpers/wait.js')
    const { startAppStub } = await import('../api/helpers.js')
    const app = await startAppStub()
    const ARENA = 'role-probes-requester-key-0123456789'
    try {
      const [apiPort, gwPort] = [await freePort(), await freePort()]
      const gwUrl = `http://127.0.0.1:${gwPort}`
      const apiDir = mkdtempSync(join(tmpdir(), 'sp-role-iso-'))
      dirs.push(apiDir)
      const a = await spawnServer({
        cwd: apiDir,
        args: ['--role', 'all', '--port', String(apiPort)],
        env: {
          PROXY_KEY: PROXY,
          STUDIOPOOL_SECRET: SECRET,
          ARENA_POOL_SERVICE_KEY: ARENA,
          STUDIOPOOL_PUBLIC_URL: gwUrl,
        },
        config: `${await storeYaml(kind, apiDir)}server: { dataDir: ${JSON.stringify(join(apiDir, 'data'))} }\nworker: { interval: 1s }\ntemplates:\n  demo:\n    provider: fake\n    fake: { address: ${JSON.stringify(app.url)} }\n`,
      })
      procs.push(a)
      const apiUrl = `http://127.0.0.1:${apiPort}`
      // The launch link names gwUrl (publicUrl); the test follows its path on the gateway's actual port.
      const g = await serve(kind, 'gateway', '  demo:\n    provider: fake\n', {
        SERVICE_URL: apiUrl,
        STUDIOPOOL_PUBLIC_URL: gwUrl,
      })
      const gw = g.url
      await waitFor('the gateway ready', async () => (await get(`${gw}/readyz`)).status === 200, 20_000)
      const r = await request(`${apiUrl}/api/v1/sessions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ARENA}`, 'content-type': 'application/json' },
        body: JSON.stringify({ userId: 'alice' }),
      })
      const grant = (await r.body.json()) as { instanceId: string; url: string; state: string }
      assert.equal(r.statusCode, grant.state === 'ready' ? 200 : 202)
      await waitFor(
        'ready',
        async () =>
          (await get(`${apiUrl}/api/v1/instances/${grant.instanceId}?userId=alice`, ARENA)).json?.instance?.state ===
          'ready',
        20_000,
      )
      const launchUrl = new URL(grant.url)
      const launch = await waitFor(
        'the launch link through the gateway role',
        async () => {
          const l = await request(`${gw}${launchUrl.pathname}${launchUrl.search}`)
          await l.body.dump()
          return l.statusCode === 302 ? l : undefined
        },
        10_000,
      )
      const cookie = String(launch.headers['set-cookie']).split(';')[0]!
      const session = `${gw}/s/${grant.instanceId}/`
      assert.equal((await request(session, { headers: { cookie } })).statusCode, 200)

      process.kill(a.pid, 'SIGSTOP')
      try {
        const times: number[] = []
        for (let i = 0; i < 20; i++) {
          const t0 = performance.now()
          const res = await request(session, { headers: { cookie } })
          await res.body.dump()
          assert.equal(res.statusCode, 200)
          times.push(performance.now() - t0)
        }
        assert.ok(Math.max(...times) < 500, `gateway latency with the API frozen: max ${Math.max(...times)} ms`)
      } finally {
        process.kill(a.pid, 'SIGCONT')
      }
    } finally {
      await app.close()
    }
  })
})
