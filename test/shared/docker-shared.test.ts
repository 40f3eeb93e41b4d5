/**
 * Shared app pools on the docker provider (issue 14: "any provider can host shared instances"): the
 * demo app in containers of a private Docker Engine (test/helpers/docker.ts), one per-request API
 * and one sticky app, through the real gateway. Requests are spread over both containers and each
 * is told who asked; a sticky user's WebSocket stays on one container; `docker kill` of a container
 * under load → idempotent requests retried on the other (none lost) and the pool replaces the
 * container. The isolation rules of the docker provider (docs/docker.md) are the same for shared
 * containers: the template goes through the same container body.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import WebSocket from 'ws'
import { dockerSkipReason, startDockerd, type TestDockerd } from '../helpers/docker.js'
import { demoDocker } from '../helpers/docker-server.js'
import { waitFor } from '../helpers/wait.js'
import { fetchLogin } from '../web/helpers.js'
import { census, startSharedServer, type SharedServer } from './harness.js'

const skip = dockerSkipReason() ?? undefined

interface Headers {
  instanceId: string
  owner: { user: string | null }
}

describe('shared templates on the docker provider (real Docker Engine)', { skip, timeout: 300_000 }, () => {
  let docker: TestDockerd
  let s: SharedServer
  let cookie: string

  const common = {
    mode: 'shared',
    provider: 'docker',
    minInstances: 2,
    maxInstances: 3,
    maxConnectionsPerInstance: 20,
    idleTimeout: 0,
    maxLifetime: 0,
    startTimeout: '60s',
    pathMode: 'strip',
    healthPath: '/healthz',
    docker: demoDocker(),
  }

  before(async () => {
    docker = await startDockerd()
    s = await startSharedServer(
      {
        api: { ...common, routing: 'per-request' },
        app: { ...common, routing: 'sticky', minInstances: 1 },
      },
      {
        worker: { interval: '300ms', orphanGrace: '5s' },
        providers: { docker: { hosts: [{ name: 'h1', url: docker.url }], requestTimeout: '20s' } },
      },
    )
    cookie = await fetchLogin(s.url, 'alice')
  })

  after(async () => {
    await s?.close()
    await docker?.stop()
  })

  async function readyIds(template: string, n: number): Promise<string[]> {
    const st = await waitFor(
      `${n} ready ${template} containers`,
      async () => {
        const x = await s.shared(template)
        return census(x).ready === n ? x : undefined
      },
      120_000,
    )
    return st.instances.filter((i) => i.state === 'ready' && !i.draining).map((i) => i.id)
  }

  async function get(path: string): Promise<{ status: number; body: Headers | { error: { code: string } } }> {
    const res = await fetch(`${s.url}${path}`, { headers: { cookie }, signal: AbortSignal.timeout(20_000) })
    return { status: res.status, body: (await res.json()) as Headers }
  }

  test('per-request: requests spread over both containers, each told who asked', async () => {
    const ids = await readyIds('api', 2)
    const labelled = await docker.api<{ Labels: Record<string, string> }[]>('GET', '/containers/json')
    assert.ok(labelled.body.length >= 3, `api ×2 and app ×1 run as containers (saw ${labelled.body.length})`)
    const seen = new Map<string, number>()
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        const r = await get('/a/api/headers')
        assert.equal(r.status, 200)
        const h = r.body as Headers
        assert.equal(h.owner.user, 'alice')
        seen.set(h.instanceId, (seen.get(h.instanceId) ?? 0) + 1)
      }),
    )
    assert.deepEqual([...seen.keys()].sort(), [...ids].sort(), `both containers answered: ${JSON.stringify([...seen])}`)
  })

  test('sticky: a WebSocket through the gateway echoes, and the user stays on one container', async () => {
    const [id] = await readyIds('app', 1)
    const first = await fetch(`${s.url}/a/app/headers`, { headers: { cookie } })
    assert.equal(first.status, 200)
    const sticky = first.headers
      .getSetCookie()
      .map((c) => c.split(';')[0]!)
      .join('; ')
    const jar = sticky ? `${cookie}; ${sticky}` : cookie
    assert.equal(((await first.json()) as Headers).instanceId, id)
    const echoed = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(`${s.url.replace('http', 'ws')}/a/app/ws`, { headers: { cookie: jar } })
      ws.on('open', () => ws.send('hello from alice'))
      ws.on('message', (d) => {
        resolve(String(d))
        ws.close()
      })
      ws.on('unexpected-response', (_q, r) => reject(new Error(`upgrade refused: ${r.statusCode}`)))
      ws.on('error', reject)
    })
    assert.equal(echoed, 'hello from alice')
    const again = (await (await fetch(`${s.url}/a/app/headers`, { headers: { cookie: jar } })).json()) as Headers
    assert.equal(again.instanceId, id)
  })

  test('docker kill under load: GETs are retried on the other container, none lost; the container is replaced', async () => {
    const ids = await readyIds('api', 2)
    const victim = (await s.running.store!.getInstance(ids[0]!))!
    const containerId = victim.providerRef!.split('/')[1]!
    let stop = false
    const outcomes = { ok: 0, other: [] as string[] }
    const load = Promise.all(
      Array.from({ length: 4 }, async () => {
        while (!stop) {
          const r = await get('/a/api/headers')
          if (r.status === 200) outcomes.ok++
          else outcomes.other.push(`${r.status} ${JSON.stringify(r.body)}`)
        }
      }),
    )
    await waitFor('some requests answered before the kill', () => outcomes.ok >= 20)
    assert.equal((await docker.api('POST', `/containers/${containerId}/kill?signal=KILL`)).status, 204)
    const before = outcomes.ok
    await waitFor('requests answered after the kill', () => outcomes.ok >= before + 40)
    // The pool replaces the lost container: two ready again, the killed one's container is gone.
    await waitFor(
      'two ready api instances, none on the killed container',
      async () => {
        const x = await s.shared('api')
        if (census(x).ready !== 2) return undefined
        const refs = await Promise.all(
          x.instances.filter((i) => i.state === 'ready').map(async (i) => (await s.running.store!.getInstance(i.id))!),
        )
        return refs.every((i) => !i.providerRef!.endsWith(containerId)) ? true : undefined
      },
      120_000,
    )
    stop = true
    await load
    assert.deepEqual(outcomes.other, [], 'every idempotent request was answered (retried on the other container)')
  })
})
