/**
 * Restart and recovery with the real binary, the local provider and real processes:
 * - kill -9 the server → the same instances come back, no process leaked or duplicated, idle
 *   culling still happens on time (timers live in the store);
 * - kill -9 an assigned instance's process → a replacement under the same id and URL, and a
 *   WebSocket client through the gateway reconnects and works;
 * - kill -9 the server between "provider asked" and "store updated" (fault injection) → no orphan,
 *   no lost assignment;
 * - a process tagged with our pool that the store does not know → reaped after the grace.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { request } from 'undici'
import WebSocket from 'ws'
import { newInstanceId } from '../../src/domain/ids.js'
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE } from '../../src/providers/provider.js'
import { createProvider } from '../../src/providers/local/index.js'
import { makeLocalDemoTemplate } from '../helpers/template.js'
import { waitFor } from '../helpers/wait.js'
import {
  api,
  DEMO_APP,
  isAlive,
  killAll,
  livePids,
  spawnServer,
  type ServerProcess,
} from '../helpers/server-process.js'

const dirs: string[] = []
const servers: ServerProcess[] = []
after(async () => {
  for (const s of servers) await s.kill('SIGKILL')
  for (const d of dirs) {
    killAll(join(d, 'data'))
    rmSync(d, { recursive: true, force: true })
  }
})

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'sp-recovery-'))
  dirs.push(d)
  return d
}

const config = (o: { minFree?: number; idle?: string; grace?: string } = {}) => `
server: { dataDir: ./data }
worker: { interval: 250ms, orphanGrace: ${o.grace ?? '10m'} }
gateway: { activityFlush: 250ms }
templates:
  demo:
    provider: local
    minFree: ${o.minFree ?? 0}
    maxInstances: 5
    idleTimeout: ${o.idle ?? '30m'}
    startTimeout: 20s
    healthPath: /healthz
    local: { command: [node, ${JSON.stringify(DEMO_APP)}, --port, '{{port}}', --base-path, '{{basePath}}'], stopGrace: 2000 }
`

async function start(cwd: string, yaml: string, env: Record<string, string> = {}): Promise<ServerProcess> {
  const s = await spawnServer({ cwd, config: yaml, env })
  servers.push(s)
  return s
}

async function command(s: ServerProcess, key: string, command: string, payload: Record<string, unknown>) {
  return api(s.url, key, 'POST', '/api/commands', { command, payload })
}

async function waitReady(s: ServerProcess, key: string, instanceId: string, userId: string) {
  return waitFor(
    `instance ${instanceId} ready`,
    async () => {
      const r = await command(s, key, 'GET_STATUS', { instanceId, userId })
      return r.status === 200 && r.body.instance.state === 'ready' ? r.body.instance : undefined
    },
    30_000,
    100,
  )
}

/** Follows the launch URL like a browser: returns the session cookie. */
async function launch(launchUrl: string): Promise<string> {
  const res = await request(launchUrl, { method: 'GET' })
  await res.body.dump()
  assert.equal(res.statusCode, 302)
  const set = ([] as string[]).concat(res.headers['set-cookie'] ?? [])
  assert.ok(set.length, 'the launch sets a cookie')
  return set[0]!.split(';')[0]!
}

async function getPage(url: string, cookie: string): Promise<number> {
  const res = await request(url, { headers: { cookie, accept: 'text/html' } })
  await res.body.dump()
  return res.statusCode
}

async function workerCycles(s: ServerProcess, key: string): Promise<number> {
  const r = await api<string>(s.url, key, 'GET', '/metrics')
  const m = /studiopool_worker_cycle_seconds_count (\d+)/.exec(r.body)
  return m ? Number(m[1]) : 0
}

const IDLE_S = 10

describe('restart and recovery', () => {
  test('kill -9 the server: the same instances come back, nothing leaked or duplicated, idle culling on time', async () => {
    const cwd = tmp()
    const dataDir = join(cwd, 'data')
    // u2's session has no activity after its assignment: the idle timeout must outlast two starts of the server.
    const a = await start(cwd, config({ minFree: 1, idle: `${IDLE_S}s` }))
    const key = a.adminKey!
    assert.ok(key, 'the first start prints an admin key')
    const g1 = (await command(a, key, 'REQUEST_SESSION', { userId: 'u1' })).body
    const g2 = (await command(a, key, 'REQUEST_SESSION', { userId: 'u2' })).body
    await waitReady(a, key, g1.instanceId, 'u1')
    await waitReady(a, key, g2.instanceId, 'u2')
    const cookie = await launch(g1.url)
    assert.equal(await getPage(`${a.url}/s/${g1.instanceId}/`, cookie), 200)
    await waitFor(
      'two assigned and one warm instance',
      async () => (await api(a.url, key, 'GET', '/api/v1/pool')).body.byTemplate.demo?.ready === 3,
    )
    const before = livePids(dataDir)
    assert.equal(before.size, 3)

    await a.kill('SIGKILL')
    for (const pid of before.values()) assert.ok(isAlive(pid), 'session processes outlive the server')
    const killedAt = Date.now()

    const b = await start(cwd, config({ minFree: 1, idle: `${IDLE_S}s` }))
    assert.equal(b.adminKey, undefined, 'no second admin key on restart')
    const ids = (await command(b, key, 'GET_STATUS', {})).body.instances as string[]
    assert.deepEqual(new Set(ids), new Set([g1.instanceId, g2.instanceId]))
    const c0 = await workerCycles(b, key)
    await waitFor('three worker cycles after the restart', async () => (await workerCycles(b, key)) >= c0 + 3)
    assert.deepEqual(livePids(dataDir), before, 'the same processes, none leaked, none duplicated')
    // The launch cookie from before the restart still works (the secret lives in the store).
    assert.equal(await getPage(`${b.url}/s/${g1.instanceId}/`, cookie), 200)
    const lastActivity = Date.now()

    // Nobody sends anything now: both sessions are culled after the idle timeout, and not much later.
    await waitFor(
      'both sessions culled as idle',
      async () => {
        const h = (await api(b.url, key, 'GET', '/api/v1/history?reason=idle')).body.history as unknown[]
        return h.length === 2
      },
      30_000,
      100,
    )
    const culledAfter = Date.now() - lastActivity
    assert.ok(culledAfter >= IDLE_S * 1000 - 1000, `not culled early (${culledAfter} ms)`)
    assert.ok(
      culledAfter < IDLE_S * 1000 + 4_000,
      `culled on time (${culledAfter} ms after the last activity, ${Date.now() - killedAt} ms after the kill)`,
    )
    await waitFor(
      'the culled processes gone',
      () => !isAlive(before.get(g1.instanceId)!) && !isAlive(before.get(g2.instanceId)!),
    )
    await b.kill()
  })

  test('kill -9 an assigned instance: a replacement under the same URL, and the WebSocket client reconnects', async () => {
    const cwd = tmp()
    const dataDir = join(cwd, 'data')
    const s = await start(cwd, config())
    const key = s.adminKey!
    const g = (await command(s, key, 'REQUEST_SESSION', { userId: 'u3' })).body
    await waitReady(s, key, g.instanceId, 'u3')
    const cookie = await launch(g.url)
    const wsUrl = `${s.url.replace('http', 'ws')}/s/${g.instanceId}/ws`
    const connect = () =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(wsUrl, { headers: { cookie, origin: s.url } })
        ws.once('open', () => resolve(ws))
        ws.once('error', reject)
        ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)))
      })
    const echo = (ws: WebSocket, text: string) =>
      new Promise<string>((resolve, reject) => {
        ws.once('message', (d) => resolve(d.toString()))
        ws.once('close', () => reject(new Error('closed')))
        ws.send(text)
      })
    const ws1 = await connect()
    assert.match(await echo(ws1, 'before'), /before/)
    const closed = new Promise((r) => ws1.once('close', r))

    const pid = livePids(dataDir).get(g.instanceId)!
    process.kill(-pid, 'SIGKILL')
    await closed // the gateway drops the connection to the dead app

    // The client reconnects with backoff, as a browser app would, to the same URL.
    let ws2: WebSocket | undefined
    await waitFor(
      'a WebSocket to the replacement',
      async () => {
        try {
          ws2 = await connect()
          return true
        } catch {
          return false
        }
      },
      30_000,
      200,
    )
    assert.match(await echo(ws2!, 'after'), /after/)
    ws2!.close()
    const inst = (await command(s, key, 'GET_STATUS', { instanceId: g.instanceId, userId: 'u3' })).body.instance
    assert.equal(inst.url, `${s.url}/s/${g.instanceId}/`, 'the same URL')
    assert.equal(inst.generation, 1, 'a new generation behind it')
    assert.equal(inst.userId, 'u3', 'the owner kept')
    assert.notEqual(livePids(dataDir).get(g.instanceId), pid, 'a new process')
    const audit = (await api(s.url, key, 'GET', `/api/v1/audit?instanceId=${g.instanceId}`)).body.events as {
      event: string
    }[]
    assert.ok(audit.some((e) => e.event === 'replaced'))
    await s.kill()
  })

  for (const fault of ['kill-after-create', 'kill-before-create'] as const) {
    test(`kill -9 the server ${fault === 'kill-after-create' ? 'between the provider create and the store update' : 'after the store write, before the provider create'}: no orphan, no lost assignment`, async () => {
      const cwd = tmp()
      const dataDir = join(cwd, 'data')
      const a = await start(cwd, config(), { STUDIOPOOL_TEST_FAULT: fault })
      const key = a.adminKey!
      const r = await command(a, key, 'REQUEST_SESSION', { userId: 'u4' }).catch(() => undefined)
      await waitFor('the server to die at the fault', () => a.child.exitCode !== null || a.child.signalCode !== null)
      const orphanPids = livePids(dataDir)
      assert.equal(orphanPids.size, fault === 'kill-after-create' ? 1 : 0)

      const b = await start(cwd, config())
      const ids = (await command(b, key, 'GET_STATUS', {})).body.instances as string[]
      assert.equal(ids.length, 1, 'the assignment survived')
      if (r) assert.equal(ids[0], r.body.instanceId)
      const inst = await waitReady(b, key, ids[0]!, 'u4')
      assert.equal(inst.userId, 'u4')
      const now = livePids(dataDir)
      assert.equal(now.size, 1, 'exactly one process: adopted or made once, nothing leaked')
      if (fault === 'kill-after-create')
        assert.deepEqual(now, orphanPids, 'the process made before the crash was adopted, not duplicated')
      const hist = (await api(b.url, key, 'GET', '/api/v1/history?userId=u4')).body.history as {
        endedAt: string | null
      }[]
      assert.equal(hist.length, 1)
      assert.equal(hist[0]!.endedAt, null, 'the assignment is still open')
      await b.kill()
    })
  }

  test('a process tagged with our pool that the store does not know is reaped after the grace', async () => {
    const cwd = tmp()
    const dataDir = join(cwd, 'data')
    const s = await start(cwd, config({ grace: '2s' }))
    const key = s.adminKey!
    const provider = createProvider({ poolId: 'studiopool', dataDir, settings: {}, log: pino({ level: 'silent' }) })
    await provider.init({ log: pino({ level: 'silent' }) })
    const id = newInstanceId()
    const template = makeLocalDemoTemplate({ name: 'demo' })
    // The grace counts from the resource's own creation time, which is before create() returns.
    const bornAt = Date.now()
    const made = await provider.create(
      {
        id,
        poolId: 'studiopool',
        template,
        basePath: `/s/${id}/`,
        labels: { [LABEL_POOL]: 'studiopool', [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'demo' },
        progressUrl: 'http://127.0.0.1:9/',
        progressToken: 'x',
        appToken: 'x',
        ownerId: null,
        sessionUrl: 'http://127.0.0.1:9/',
      },
      { log: pino({ level: 'silent' }) },
    )
    const pid = livePids(dataDir).get(id)!
    assert.ok(isAlive(pid))
    const c0 = await workerCycles(s, key)
    await waitFor('two worker cycles', async () => (await workerCycles(s, key)) >= c0 + 2)
    if (Date.now() - bornAt < 1500) assert.ok(isAlive(pid), 'not reaped before the grace')
    await waitFor('the orphan reaped', () => !isAlive(pid), 20_000, 100)
    assert.ok(Date.now() - bornAt >= 2000, 'reaped only after the grace')
    // Audited once the destroy has finished (the process goes first, then its namespace).
    await waitFor(
      'the reaping audited',
      async () => {
        const audit = (await api(s.url, key, 'GET', `/api/v1/audit?instanceId=${id}`)).body.events as {
          event: string
          detail: { ref: string }
        }[]
        return audit.some((e) => e.event === 'orphan-reaped' && e.detail.ref === made.ref)
      },
      10_000,
      100,
    )
    await provider.close()
    await s.kill()
  })
})
