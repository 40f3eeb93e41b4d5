/**
 * Docker sessions end to end: the real server (`studiopool serve`) with docker-provider templates
 * against a private dockerd (test/helpers/docker.ts). Sessions are requested through the public
 * API and used through the gateway over HTTP and WebSocket: the demo app (page and WebSocket echo),
 * Jupyter (a kernel over the gateway's WebSocket; a file written in the user's home volume is there
 * in their next session). `docker kill` of a session's container → replaced under the same URL; an
 * idle cull removes the container and keeps the volume; the admin homes API and CLI list and
 * delete a user's volume (refused while a session uses it); a server killed with SIGKILL right
 * after the create → exactly one container, adopted by the next server.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { userSlug } from '../../src/providers/docker/index.js'
import { CookieJar, http } from '../e2e/harness.js'
import { waitFor } from '../helpers/wait.js'
import { dockerSkipReason, startDockerd, type TestDockerd } from '../helpers/docker.js'
import {
  DEMO_TEMPLATE,
  JUPYTER_INSTALLED,
  JUPYTER_TEMPLATE,
  demoDocker,
  dockerServerConfig,
  jupyterDocker,
  openJupyter,
  requestReady,
  runInKernel,
  status,
  useDemo,
  waitReady,
} from '../helpers/docker-server.js'
import { BIN, api, spawnServer, type ServerProcess } from '../helpers/server-process.js'

const skip = dockerSkipReason() ?? undefined
const POOL = 'dk-e2e'
const home = { volume: 'studiopool-home-{{userSlug}}', mountPath: '/home/session' }

interface Container {
  Id: string
  State: string
  Labels: Record<string, string>
}

describe('docker sessions end to end (server, gateway, real Docker Engine)', { skip, timeout: 600_000 }, () => {
  let docker: TestDockerd
  let srv: ServerProcess
  let key: string
  const dirs: string[] = []
  const servers: ServerProcess[] = []

  const config = (poolId: string) =>
    dockerServerConfig({
      poolId,
      hosts: [{ name: 'h1', url: docker.url, maxConcurrentStarts: 4 }],
      templates: {
        demo: { ...DEMO_TEMPLATE, docker: demoDocker({ home }) },
        brief: { ...DEMO_TEMPLATE, idleTimeout: '2s', docker: demoDocker({ home }) },
        ...(JUPYTER_INSTALLED ? { jupyter: { ...JUPYTER_TEMPLATE, docker: jupyterDocker() } } : {}),
      },
    })

  async function serve(cwd: string, poolId: string, env: Record<string, string> = {}): Promise<ServerProcess> {
    const s = await spawnServer({ cwd, config: config(poolId), timeoutMs: 60_000, env })
    servers.push(s)
    return s
  }

  async function containers(label: string): Promise<Container[]> {
    const filters = encodeURIComponent(JSON.stringify({ label: [label] }))
    return (await docker.api<Container[]>('GET', `/containers/json?all=true&filters=${filters}`)).body
  }

  before(async () => {
    docker = await startDockerd()
    const cwd = mkdtempSync(join(tmpdir(), 'spdk-e2e-'))
    dirs.push(cwd)
    srv = await serve(cwd, POOL)
    key = srv.adminKey!
    assert.ok(key, 'the bootstrap admin key')
  })

  after(async () => {
    for (const s of servers) await s.kill('SIGTERM')
    await docker?.stop()
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })

  it('a demo session: requested through the API, page and WebSocket echo through the gateway, labelled', async () => {
    const s = await requestReady(srv, key, 'alice', 'demo')
    const { page, echo } = await useDemo(srv, s.url, s.instanceId)
    assert.match(page, /WebSocket echo/)
    assert.match(echo, /hello through the gateway/)
    const [c, ...more] = await containers(`studiopool.instance=${s.instanceId}`)
    assert.equal(more.length, 0, 'one container for the instance')
    assert.equal(c!.State, 'running')
    assert.equal(c!.Labels['studiopool.pool'], POOL)
    assert.equal(c!.Labels['studiopool.template'], 'demo')
    assert.equal(c!.Labels['studiopool.owner'], 'alice')
    assert.equal(c!.Labels['studiopool.generation'], '0')
  })

  it('docker kill of the container → the session is replaced under the same URL', async () => {
    const s = await requestReady(srv, key, 'kim', 'demo')
    const jar = new CookieJar()
    assert.equal((await http(s.url, jar)).status, 200)
    const [before] = await containers(`studiopool.instance=${s.instanceId}`)
    assert.equal((await docker.api('POST', `/containers/${before!.Id}/kill`)).status, 204)
    const replaced = await waitFor(
      'a new container of the same instance',
      async () => {
        const live = (await containers(`studiopool.instance=${s.instanceId}`)).filter((c) => c.State === 'running')
        return live.length === 1 && live[0]!.Id !== before!.Id ? live[0] : undefined
      },
      60_000,
    )
    assert.equal(replaced.Labels['studiopool.generation'], '1', 'a new generation')
    await waitReady(srv, key, s.instanceId, 'kim')
    const again = await http(`${srv.url}/s/${s.instanceId}/`, jar)
    assert.equal(again.status, 200, 'the same URL and cookie reach the replacement')
  })

  it('an idle cull removes the container and keeps the home volume', async () => {
    const s = await requestReady(srv, key, 'ivan', 'brief')
    await waitFor(
      'the idle session to be culled',
      async () => {
        const st = await status(srv, key, s.instanceId, 'ivan')
        return st.state === 'terminated' ? st : undefined
      },
      60_000,
    )
    await waitFor(
      'its container to be removed',
      async () => ((await containers(`studiopool.instance=${s.instanceId}`)).length === 0 ? true : undefined),
      30_000,
    )
    const vol = await docker.api('GET', `/volumes/studiopool-home-${userSlug('ivan')}`)
    assert.equal(vol.status, 200, 'the home volume outlives the culled session')
  })

  it("the admin homes API and CLI list a user's volume, refuse to delete it in use, then delete it", async () => {
    const s = await requestReady(srv, key, 'hana', 'demo')
    const volume = `studiopool-home-${userSlug('hana')}`
    const listed = await api<{ homes: { provider: string; ref: string; owner: string }[] }>(
      srv.url,
      key,
      'GET',
      '/api/v1/homes?userId=hana',
    )
    assert.equal(listed.status, 200, JSON.stringify(listed.body))
    assert.deepEqual(
      listed.body.homes.map((h) => [h.provider, h.ref, h.owner]),
      [['docker', `h1/${volume}`, 'hana']],
    )
    const cli = spawnSync(process.execPath, [BIN, 'homes', '--user', 'hana', '--url', srv.url, '--key', key], {
      encoding: 'utf8',
    })
    assert.equal(cli.status, 0, cli.stderr)
    assert.match(cli.stdout, new RegExp(`hana\\s+docker\\s+h1/${volume}`))
    const ref = encodeURIComponent(`h1/${volume}`)
    const inUse = await api(srv.url, key, 'DELETE', `/api/v1/homes?provider=docker&ref=${ref}`)
    assert.equal(inUse.status, 409, 'refused while the session mounts it')
    const ended = await api(srv.url, key, 'POST', '/api/commands', {
      command: 'DELETE',
      payload: { instanceId: s.instanceId, userId: 'hana' },
    })
    assert.equal(ended.status, 200, JSON.stringify(ended.body))
    await waitFor(
      'the container to be removed',
      async () => ((await containers(`studiopool.instance=${s.instanceId}`)).length === 0 ? true : undefined),
      30_000,
    )
    const del = spawnSync(
      process.execPath,
      [BIN, 'homes', 'delete', 'docker', `h1/${volume}`, '--url', srv.url, '--key', key],
      { encoding: 'utf8' },
    )
    assert.equal(del.status, 0, del.stderr)
    assert.equal((await docker.api('GET', `/volumes/${volume}`)).status, 404, 'deleted by the explicit admin action')
    const again = await api(srv.url, key, 'DELETE', `/api/v1/homes?provider=docker&ref=${ref}`)
    assert.equal(again.status, 404)
    const bad = await api(srv.url, key, 'DELETE', `/api/v1/homes?provider=nope&ref=${ref}`)
    assert.equal(bad.status, 400)
  })

  it(
    'Jupyter: a kernel over the gateway WebSocket; a file in the home volume is there in the next session',
    {
      skip: JUPYTER_INSTALLED
        ? false
        : 'jupyter-notebook is not installed (Debian: jupyter-notebook python3-ipykernel)',
    },
    async () => {
      const first = await requestReady(srv, key, 'bob', 'jupyter')
      const k1 = await openJupyter(srv, first.url, first.instanceId)
      const wrote = await runInKernel(
        srv,
        k1,
        "import os\nopen('/home/session/kept.txt','w').write('from the first session')\nprint('uid', os.getuid())",
      )
      assert.match(wrote, /uid 1000/, 'the kernel runs as the template user')
      const ended = await api(srv.url, key, 'POST', '/api/commands', {
        command: 'DELETE',
        payload: { instanceId: first.instanceId, userId: 'bob' },
      })
      assert.equal(ended.status, 200)
      await waitFor(
        'the first container to be removed',
        async () => ((await containers(`studiopool.instance=${first.instanceId}`)).length === 0 ? true : undefined),
        30_000,
      )
      const second = await requestReady(srv, key, 'bob', 'jupyter')
      assert.notEqual(second.instanceId, first.instanceId)
      const k2 = await openJupyter(srv, second.url, second.instanceId)
      const read = await runInKernel(srv, k2, "print(open('/home/session/kept.txt').read())")
      assert.match(read, /from the first session/)
    },
  )

  it('a server killed with SIGKILL right after the create → one container, adopted by the next server', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'spdk-e2e-kill-'))
    dirs.push(cwd)
    const pool = 'dk-e2e-kill'
    const first = await serve(cwd, pool, { STUDIOPOOL_TEST_FAULT: 'kill-after-create' })
    const firstKey = first.adminKey!
    const r = await api<{ instanceId: string }>(first.url, firstKey, 'POST', '/api/commands', {
      command: 'REQUEST_SESSION',
      payload: { userId: 'dora', template: 'demo' },
    })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    await waitFor(
      'the server to die after the create',
      () => (first.child.exitCode !== null || first.child.signalCode !== null ? true : undefined),
      60_000,
    )
    const made = await containers(`studiopool.instance=${r.body.instanceId}`)
    assert.equal(made.length, 1, 'the create happened before the kill')
    const second = await serve(cwd, pool)
    await waitReady(second, firstKey, r.body.instanceId, 'dora')
    const after = await containers(`studiopool.instance=${r.body.instanceId}`)
    assert.deepEqual(
      after.map((c) => c.Id),
      [made[0]!.Id],
      'exactly one container, the one made before the kill',
    )
    await second.kill('SIGTERM')
  })
})
