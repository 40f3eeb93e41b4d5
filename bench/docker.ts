/**
 * `npm run bench:docker` (issue 11): the docker provider through the real server and gateway, on a
 * private dockerd (test/helpers/docker.ts; needs root and Debian's docker.io), in one run:
 *
 * 1. Cold start: request-to-ready of one demo session (the instance's `readyAt - createdAt`, from the
 *    store), against the container's own start (the same image, command and mounts created, started
 *    and answering through the Engine API directly, no studiopool); the control plane's share is
 *    the difference. BENCH_COLD rounds (default 5), medians.
 * 2. A burst of BENCH_BURST (default 20) simultaneous cold starts on one host, with
 *    `maxConcurrentStarts: 4` and unlimited: time until all are ready, and the gateway latency of
 *    an already running session meanwhile (sequential requests through the gateway).
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { CookieJar, http } from '../test/e2e/harness.js'
import { startDockerd, dockerSkipReason, type TestDockerd } from '../test/helpers/docker.js'
import { DEMO_TEMPLATE, demoDocker, dockerServerConfig, requestReady } from '../test/helpers/docker-server.js'
import { api, spawnServer, type ServerProcess } from '../test/helpers/server-process.js'

const COLD = Number(process.env.BENCH_COLD ?? 5)
const BURST = Number(process.env.BENCH_BURST ?? 20)

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN
}
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN
}
const ms = (n: number) => `${Math.round(n)} ms`

interface InstanceView {
  state: string
  createdAt: string | null
  readyAt: string | null
  failureReason: string | null
}

async function instance(srv: ServerProcess, key: string, id: string, user: string): Promise<InstanceView> {
  const r = await api<{ instance: InstanceView }>(srv.url, key, 'POST', '/api/commands', {
    command: 'GET_STATUS',
    payload: { instanceId: id, userId: user },
  })
  return r.body.instance
}

async function withServer<T>(
  docker: TestDockerd,
  poolId: string,
  host: Record<string, unknown>,
  fn: (srv: ServerProcess, key: string) => Promise<T>,
): Promise<T> {
  const cwd = mkdtempSync(join(tmpdir(), 'spdk-bench-'))
  const srv = await spawnServer({
    cwd,
    timeoutMs: 60_000,
    config: dockerServerConfig({
      poolId,
      hosts: [{ name: 'h1', url: docker.url, ...host }],
      templates: { demo: { ...DEMO_TEMPLATE, maxInstances: BURST + 5, docker: demoDocker() } },
      worker: { interval: '200ms' },
    }),
  })
  try {
    return await fn(srv, srv.adminKey!)
  } finally {
    await srv.kill('SIGTERM')
    // The pool's containers go with the bench: remove them so that the next run starts empty.
    const filters = encodeURIComponent(JSON.stringify({ label: [`studiopool.pool=${poolId}`] }))
    for (const c of (await docker.api<{ Id: string }[]>('GET', `/containers/json?all=true&filters=${filters}`)).body)
      await docker.api('DELETE', `/containers/${c.Id}?force=true`)
    rmSync(cwd, { recursive: true, force: true })
  }
}

/** The container's own start: create + start + the app answers, through the Engine API alone. */
async function directStart(docker: TestDockerd, network: string, i: number): Promise<number> {
  const s = demoDocker() as { image: string; command: string[]; user: string; mounts: Record<string, unknown>[] }
  const t0 = performance.now()
  const created = await docker.api<{ Id: string }>('POST', `/containers/create?name=bench-direct-${i}`, {
    Image: s.image,
    Cmd: s.command.map((a) => a.replace('{{basePath}}', '/')),
    User: s.user,
    Env: ['HOME=/home/session', 'PORT=8000'],
    ExposedPorts: { '8000/tcp': {} },
    HostConfig: {
      NetworkMode: network,
      PortBindings: { '8000/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }] },
      Mounts: s.mounts.map((m) => ({ Type: 'bind', Source: m.source, Target: m.target, ReadOnly: true })),
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
    },
  })
  assert.equal(created.status, 201, JSON.stringify(created.body))
  const id = created.body.Id
  assert.equal((await docker.api('POST', `/containers/${id}/start`)).status, 204)
  const info = await docker.api<{ NetworkSettings: { Ports: Record<string, { HostPort: string }[]> } }>(
    'GET',
    `/containers/${id}/json`,
  )
  const port = info.body.NetworkSettings.Ports['8000/tcp']![0]!.HostPort
  for (;;) {
    try {
      const r = await request(`http://127.0.0.1:${port}/healthz`, { headersTimeout: 2000 })
      await r.body.dump()
      if (r.statusCode < 500) break
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 10))
  }
  const t = performance.now() - t0
  await docker.api('DELETE', `/containers/${id}?force=true`)
  return t
}

async function coldStarts(docker: TestDockerd): Promise<{ total: number; own: number }> {
  return withServer(docker, 'bench-cold', {}, async (srv, key) => {
    const totals: number[] = []
    const own: number[] = []
    const nets = await docker.api<{ Name: string; Labels: Record<string, string> }[]>('GET', '/networks')
    for (let i = 0; i < COLD; i++) {
      const s = await requestReady(srv, key, `cold-${i}`, 'demo')
      const v = await instance(srv, key, s.instanceId, `cold-${i}`)
      totals.push(Date.parse(v.readyAt!) - Date.parse(v.createdAt!))
      await api(srv.url, key, 'POST', '/api/commands', {
        command: 'DELETE',
        payload: { instanceId: s.instanceId, userId: `cold-${i}` },
      })
      const net = (await docker.api<typeof nets.body>('GET', '/networks')).body.find(
        (n) => n.Labels?.['studiopool.pool'] === 'bench-cold',
      )!.Name
      own.push(await directStart(docker, net, i))
    }
    return { total: median(totals), own: median(own) }
  })
}

async function burst(
  docker: TestDockerd,
  maxConcurrentStarts: number | null,
): Promise<{ allReadyMs: number; latency: number[] }> {
  const pool = `bench-burst-${maxConcurrentStarts ?? 'unlimited'}`
  return withServer(docker, pool, maxConcurrentStarts ? { maxConcurrentStarts } : {}, async (srv, key) => {
    // A running session whose gateway latency is measured while the burst starts.
    const probe = await requestReady(srv, key, 'watcher', 'demo')
    const jar = new CookieJar()
    assert.equal((await http(probe.url, jar)).status, 200)
    const t0 = performance.now()
    const ids = await Promise.all(
      Array.from({ length: BURST }, async (_, i) => {
        const r = await api<{ instanceId: string }>(srv.url, key, 'POST', '/api/commands', {
          command: 'REQUEST_SESSION',
          payload: { userId: `burst-${i}`, template: 'demo' },
        })
        assert.equal(r.status, 200, JSON.stringify(r.body))
        return { id: r.body.instanceId, user: `burst-${i}` }
      }),
    )
    const latency: number[] = []
    let done = false
    const measure = (async () => {
      while (!done) {
        const t = performance.now()
        const r = await http(`${srv.url}/s/${probe.instanceId}/healthz`, jar)
        if (r.status === 200) latency.push(performance.now() - t)
        await new Promise((res) => setTimeout(res, 20))
      }
    })()
    const pending = new Set(ids)
    while (pending.size) {
      for (const x of [...pending]) {
        const v = await instance(srv, key, x.id, x.user)
        if (v.state === 'failed') throw new Error(`${x.id} failed: ${v.failureReason}`)
        if (v.state === 'ready') pending.delete(x)
      }
      if (pending.size) await new Promise((r) => setTimeout(r, 50))
    }
    const allReadyMs = performance.now() - t0
    done = true
    await measure
    return { allReadyMs, latency }
  })
}

async function main(): Promise<void> {
  const why = dockerSkipReason()
  if (why) throw new Error(`bench:docker: ${why}`)
  const docker = await startDockerd()
  try {
    const cold = await coldStarts(docker)
    const limited = await burst(docker, 4)
    const unlimited = await burst(docker, null)
    const line = (name: string, b: typeof limited) =>
      `  ${name.padEnd(24)} all ready ${ms(b.allReadyMs).padStart(8)}   gateway latency p50 ${ms(median(b.latency))}, p95 ${ms(pct(b.latency, 95))}, max ${ms(Math.max(...b.latency))} (${b.latency.length} requests)`
    process.stdout.write(
      [
        '',
        `bench:docker (one private dockerd, demo app in the test image)`,
        '',
        `cold start, median of ${COLD}:`,
        `  request → ready (studiopool)   ${ms(cold.total)}`,
        `  container's own start          ${ms(cold.own)}   (create + start + app answers, Engine API alone)`,
        `  control plane's share          ${ms(cold.total - cold.own)}   (${Math.round((100 * (cold.total - cold.own)) / cold.total)} % of request → ready)`,
        '',
        `${BURST} simultaneous cold starts on one host:`,
        line('maxConcurrentStarts: 4', limited),
        line('unlimited', unlimited),
        `  ratio all-ready (limited / unlimited): ${(limited.allReadyMs / unlimited.allReadyMs).toFixed(2)}; p95 latency ratio: ${(pct(limited.latency, 95) / pct(unlimited.latency, 95)).toFixed(2)}`,
        '',
      ].join('\n'),
    )
  } finally {
    await docker.stop()
  }
}

await main()
