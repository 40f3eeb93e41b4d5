/**
 * Kubernetes sessions end to end: the real server (`studiopool serve`, a process of its own) with a
 * kubernetes-provider template, against the fake API server at the wire level (its HTTPS URL and CA
 * in a kubeconfig file, as a cluster's). A session is requested through the public API and used
 * through the gateway; the pod's app is an HTTP server on 127.0.0.1 (the fake kubelet gives the
 * pod that IP). An evicted pod is replaced and the same URL and cookie reach the new one. A shared
 * template (issue 14) runs as pods too, reached at /a/<template>/.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { stringify as stringifyYaml } from 'yaml'
import { CookieJar, http } from '../e2e/harness.js'
import { requestReady, waitReady } from '../helpers/docker-server.js'
import { startFakeKubeApi, type FakeKubeApi } from '../helpers/fake-kube-api.js'
import { spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'
import { fetchLogin } from '../web/helpers.js'

const POOL = 'k8s-e2e'
const NS = 'e2e'

describe('kubernetes sessions through the real server and gateway', { timeout: 180_000 }, () => {
  let api: FakeKubeApi
  let app: Server
  let srv: ServerProcess
  let dir: string
  let key: string

  before(async () => {
    api = await startFakeKubeApi()
    app = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(`hello from the pod, you asked for ${req.url}`)
    })
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
    const port = (app.address() as AddressInfo).port
    dir = mkdtempSync(join(tmpdir(), 'studiopool-k8s-e2e-'))
    srv = await spawnServer({
      cwd: dir,
      config: stringifyYaml({
        server: { host: '127.0.0.1', dataDir: './data', logLevel: 'warn' },
        auth: { mode: 'keys', bootstrapAdmin: true },
        store: { driver: 'sqlite' },
        pool: { id: POOL, maxInstances: 10 },
        worker: { interval: '300ms' },
        providers: { kubernetes: { kubeconfig: api.writeKubeconfig(dir), namespace: NS, retryBackoff: '100ms' } },
        // The test is the only user of this machine's loopback (docs/security.md "Logins").
        dashboard: { login: 'dev', admins: ['admin'], allowDevLoginFromSessions: true },
        templates: {
          board: {
            mode: 'shared',
            routing: 'per-request',
            provider: 'kubernetes',
            minInstances: 2,
            maxInstances: 3,
            idleTimeout: 0,
            port,
            healthPath: '/',
            pathMode: 'strip',
            startTimeout: '2m',
            kubernetes: { image: 'rocker/shiny:4.4' },
          },
          lab: {
            provider: 'kubernetes',
            minFree: 1,
            port,
            healthPath: '/',
            startTimeout: '2m',
            kubernetes: { image: 'quay.io/jupyter/base-notebook:2025-01-06' },
          },
        },
      }),
    })
    key = srv.adminKey!
  })
  after(async () => {
    await srv?.kill()
    await api?.stop()
    await new Promise<void>((r) => (app ? app.close(() => r()) : r()))
    rmSync(dir, { recursive: true, force: true })
  })

  it('a warm pod is handed out, reached through the gateway, and replaced under the same URL when evicted', async () => {
    // The warm pool's pod exists before anyone asks.
    await waitFor('the warm pod', () => api.list('pods', NS).some((p) => p.status?.phase === 'Running'), 30_000)
    const s = await requestReady(srv, key, 'alice', 'lab')
    const jar = new CookieJar()
    const first = await http(s.url, jar)
    assert.equal(first.status, 200)
    assert.match(first.text, /hello from the pod/)
    const pod = api.list('pods', NS).find((p) => p.metadata.labels['studiopool.io/instance'] === s.instanceId)!
    assert.ok(pod, 'the session is a pod labelled with its instance')
    await waitFor('the owner label (relabel on claim)', () => {
      const cur = api.get('pods', NS, pod.metadata.name)
      return cur?.metadata.labels['studiopool.io/owner'] === 'alice'
    })
    api.evict(NS, pod.metadata.name)
    await waitFor(
      'a new pod of the same instance',
      () =>
        api
          .list('pods', NS)
          .some(
            (p) =>
              p.metadata.labels['studiopool.io/instance'] === s.instanceId &&
              p.metadata.labels['studiopool.io/generation'] === '1' &&
              p.status?.phase === 'Running',
          ),
      30_000,
    )
    await waitReady(srv, key, s.instanceId, 'alice', 30_000)
    const again = await http(`${srv.url}/s/${s.instanceId}/files/a.csv`, jar)
    assert.equal(again.status, 200, 'the same URL and cookie reach the replacement')
    assert.match(again.text, /you asked for \/files\/a\.csv/, 'the prefix is stripped, as the template says')
    await waitFor('the evicted pod to be deleted', () => !api.get('pods', NS, pod.metadata.name), 30_000)
  })

  it('a shared template runs as pods: users reach it at /a/board/, requests spread over both, an evicted pod is replaced', async () => {
    const cookie = await fetchLogin(srv.url, 'bea')
    type Shared = { template: string; instances: { id: string; state: string; requests: number }[] }
    const shared = async () => {
      const r = await fetch(`${srv.url}/api/v1/shared`, { headers: { authorization: `Bearer ${key}` } })
      return ((await r.json()) as { shared: Shared[] }).shared.find((x) => x.template === 'board')!
    }
    const boardPods = () =>
      api
        .list('pods', NS)
        .filter((p) => p.metadata.labels['studiopool.io/template'] === 'board' && p.status?.phase === 'Running')
    await waitFor(
      'two running board pods, both ready in the pool',
      async () =>
        boardPods().length === 2 && (await shared()).instances.filter((i) => i.state === 'ready').length === 2,
      60_000,
    )
    const get = () =>
      fetch(`${srv.url}/a/board/report.csv`, { headers: { cookie }, signal: AbortSignal.timeout(20_000) })
    // At once: per-request routing sends each to the instance with the fewest in flight.
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        const r = await get()
        assert.equal(r.status, 200)
        assert.match(await r.text(), /you asked for \/report\.csv/)
      }),
    )
    await waitFor('both instances counted requests (the load report)', async () =>
      (await shared()).instances.every((i) => i.requests > 0),
    )
    const victim = boardPods()[0]!
    api.evict(NS, victim.metadata.name)
    const failed: number[] = []
    await waitFor(
      'the evicted pod replaced: two board pods running again, neither the evicted one',
      async () => {
        const r = await get()
        if (r.status !== 200) failed.push(r.status)
        await r.body?.cancel()
        const pods = boardPods()
        return pods.length === 2 && pods.every((p) => p.metadata.name !== victim.metadata.name)
      },
      60_000,
    )
    assert.deepEqual(failed, [], 'every GET answered while the pod was replaced')
  })
})
