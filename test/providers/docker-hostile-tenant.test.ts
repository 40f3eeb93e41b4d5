/**
 * The hostile-tenant suite (architecture.md contract 5) against Docker sessions: the real server with
 * docker-provider templates on a private dockerd, Jupyter sessions for alice and bob and a demo
 * session for carol. Code run inside alice's kernel, through the gateway, tries every attack of
 * test/security/attacks.py (the local provider's list, given Docker's facts: container pids, the
 * daemon's files for each container, addresses on the session network), then the Docker ones:
 * the Docker socket, the daemon over TCP, bob's published port through the network gateway.
 * Every attack must fail, and alice is not root.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { userSlug } from '../../src/providers/docker/index.js'
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
} from '../helpers/docker-server.js'
import { REPO, spawnServer, type ServerProcess } from '../helpers/server-process.js'

const skip =
  dockerSkipReason() ??
  (JUPYTER_INSTALLED ? undefined : 'jupyter-notebook is not installed (Debian: jupyter-notebook python3-ipykernel)')
const ATTACKS = readFileSync(join(REPO, 'test/security/attacks.py'), 'utf8')

interface Attack {
  ok: boolean
  detail: string
}

interface Inspect {
  Id: string
  State: { Pid: number }
  NetworkSettings: {
    Networks: Record<string, { IPAddress: string; Gateway: string }>
    Ports: Record<string, { HostIp: string; HostPort: string }[] | null>
  }
}

/** Run after attacks.py in the same kernel (its helpers are defined there): what only Docker has. */
function dockerAttacks(p: { dockerSocket: string; gateway: string; bobPublished: number; serverPort: number }): string {
  return `
R = {}
attempt("reach /var/run/docker.sock", lambda: os.path.exists("/var/run/docker.sock") or None)
attempt("reach the daemon's socket by its host path", lambda: os.path.exists(${JSON.stringify(p.dockerSocket)}) or None)
attempt("connect to the Docker API over TCP on the network gateway", lambda: tcp(${JSON.stringify(p.gateway)}, 2375))
attempt("connect to the Docker TLS API on the network gateway", lambda: tcp(${JSON.stringify(p.gateway)}, 2376))
attempt("connect to bob's published port through the network gateway", lambda: tcp(${JSON.stringify(p.gateway)}, ${p.bobPublished}))
attempt("connect to the server through the network gateway", lambda: tcp(${JSON.stringify(p.gateway)}, ${p.serverPort}))
attempt("see the host's processes", lambda: [d for d in os.listdir("/proc") if d.isdigit() and int(d) > 200] or None)
print("DOCKER " + json.dumps(R))
`
}

describe('hostile tenant: Docker sessions', { skip, timeout: 600_000 }, () => {
  let docker: TestDockerd
  let srv: ServerProcess
  let cwd: string
  let report: Record<string, Attack> & { uid: number; gid: number; groups: number[] }
  let extra: Record<string, Attack>
  let readyIsolation: unknown

  async function inspect(instanceId: string): Promise<Inspect> {
    const filters = encodeURIComponent(JSON.stringify({ label: [`studiopool.instance=${instanceId}`] }))
    const [c] = (await docker.api<{ Id: string }[]>('GET', `/containers/json?filters=${filters}`)).body
    assert.ok(c, `the container of ${instanceId}`)
    return (await docker.api<Inspect>('GET', `/containers/${c.Id}/json`)).body
  }

  before(async () => {
    docker = await startDockerd()
    cwd = mkdtempSync(join(tmpdir(), 'spdk-hostile-'))
    srv = await spawnServer({
      cwd,
      timeoutMs: 60_000,
      config: dockerServerConfig({
        poolId: 'dk-hostile',
        hosts: [{ name: 'h1', url: docker.url }],
        templates: {
          jupyter: { ...JUPYTER_TEMPLATE, docker: jupyterDocker() },
          demo: { ...DEMO_TEMPLATE, docker: demoDocker() },
        },
      }),
    })
    const key = srv.adminKey!
    const [alice, bob, carol] = await Promise.all([
      requestReady(srv, key, 'alice', 'jupyter'),
      requestReady(srv, key, 'bob', 'jupyter'),
      requestReady(srv, key, 'carol', 'demo'),
    ])
    const aliceK = await openJupyter(srv, alice.url, alice.instanceId)
    const bobK = await openJupyter(srv, bob.url, bob.instanceId)
    const [a, b, c] = await Promise.all([alice, bob, carol].map((s) => inspect(s.instanceId)))
    const net = (i: Inspect) => Object.values(i.NetworkSettings.Networks)[0]!
    const data = join(docker.dir, 'data')
    const bobVolume = (await docker.api<{ Mountpoint: string }>('GET', `/volumes/studiopool-home-${userSlug('bob')}`))
      .body.Mountpoint
    const serverPort = Number(new URL(srv.url).port)
    const params = {
      serverPid: srv.pid,
      serverPort,
      dataDir: join(cwd, 'data'),
      store: join(cwd, 'data', 'studiopool.db'),
      bobPid: b.State.Pid,
      bobHome: bobVolume,
      // The daemon's files about each container stand in for the local provider's instance records.
      bobRecord: join(data, 'containers', b.Id, 'config.v2.json'),
      aliceRecord: join(data, 'containers', a.Id, 'hostconfig.json'),
      bobHost: net(b).IPAddress,
      bobPort: 8888,
      bobBase: `/s/${bob.instanceId}/`,
      bobKernel: bobK.kernelId,
      carolHost: net(c).IPAddress,
      carolPort: 8000,
      hostAddrs: [net(a).Gateway],
      cookieName: 'studiopool_session',
    }
    const code = `PARAMS_B64 = ${JSON.stringify(Buffer.from(JSON.stringify(params)).toString('base64'))}\n${ATTACKS}`
    const out = await runInKernel(srv, aliceK, code)
    const line = out.split('\n').find((l) => l.startsWith('ATTACKS '))
    assert.ok(line, `the attack script printed its report:\n${out}`)
    report = JSON.parse(line.slice('ATTACKS '.length)) as typeof report
    const bobPublished = Number(Object.values(b.NetworkSettings.Ports).flatMap((x) => x ?? [])[0]!.HostPort)
    const out2 = await runInKernel(
      srv,
      aliceK,
      dockerAttacks({ dockerSocket: docker.socket, gateway: net(a).Gateway, bobPublished, serverPort }),
    )
    const line2 = out2.split('\n').find((l) => l.startsWith('DOCKER '))
    assert.ok(line2, `the Docker attacks printed their report:\n${out2}`)
    extra = JSON.parse(line2.slice('DOCKER '.length)) as Record<string, Attack>
    readyIsolation = ((await (await fetch(`${srv.url}/readyz`)).json()) as { isolation: unknown }).isolation
  })

  after(async () => {
    await srv?.kill('SIGTERM')
    await docker?.stop()
    if (cwd) rmSync(cwd, { recursive: true, force: true })
  })

  test('alice is not root, and /readyz says Docker sessions are isolated', () => {
    assert.equal(report.uid, 1000, 'the template user, not root')
    assert.notEqual(report.uid, process.getuid!(), "not the server's account")
    assert.deepEqual(readyIsolation, [{ provider: 'docker', isolated: true }])
  })

  test("every attack from inside alice's kernel fails", (t) => {
    const all = [...Object.entries(report), ...Object.entries(extra)].filter(
      (e): e is [string, Attack] => typeof e[1] === 'object' && e[1] !== null && 'ok' in e[1],
    )
    assert.ok(all.length >= 25, `the whole attack list ran (${all.length})`)
    for (const [name, a] of all) t.diagnostic(`${a.ok ? 'SUCCEEDED' : 'failed   '} ${name}: ${a.detail}`)
    const succeeded = all.filter(([, a]) => a.ok).map(([n, a]) => `${n} (${a.detail})`)
    assert.deepEqual(succeeded, [], `attacks that succeeded:\n${succeeded.join('\n')}`)
  })
})
