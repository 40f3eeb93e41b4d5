/**
 * Two Docker daemons on this machine as two hosts, through the real server and gateway: placement
 * spreads sessions; when one daemon's process stops (SIGSTOP: it no longer answers) its sessions
 * are replaced on the other under the same URLs; when it answers again (SIGCONT) its superseded
 * containers are removed and it takes new sessions again.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { CookieJar, http } from '../e2e/harness.js'
import { waitFor } from '../helpers/wait.js'
import { dockerSkipReason, startDockerd, type TestDockerd } from '../helpers/docker.js'
import { DEMO_TEMPLATE, demoDocker, dockerServerConfig, requestReady, waitReady } from '../helpers/docker-server.js'
import { spawnServer, type ServerProcess } from '../helpers/server-process.js'

const skip = dockerSkipReason() ?? undefined
const POOL = 'dk-e2e-hosts'

interface Container {
  Id: string
  State: string
  Labels: Record<string, string>
}

describe('two Docker daemons as two hosts, through the server and gateway', { skip, timeout: 600_000 }, () => {
  let a: TestDockerd
  let b: TestDockerd
  let srv: ServerProcess
  let key: string
  let cwd: string
  let stopped = false

  /** Running containers of this pool on one daemon, by instance id. */
  async function running(d: TestDockerd): Promise<Map<string, Container>> {
    const filters = encodeURIComponent(JSON.stringify({ label: [`studiopool.pool=${POOL}`], status: ['running'] }))
    const list = (await d.api<Container[]>('GET', `/containers/json?filters=${filters}`)).body
    return new Map(list.map((c) => [c.Labels['studiopool.instance']!, c]))
  }

  before(async () => {
    a = await startDockerd()
    // Only one daemon may manage iptables on a machine (each flushes the other's chains at start).
    b = await startDockerd({ iptables: false })
    cwd = mkdtempSync(join(tmpdir(), 'spdk-e2e-hosts-'))
    srv = await spawnServer({
      cwd,
      timeoutMs: 60_000,
      config: dockerServerConfig({
        poolId: POOL,
        hosts: [
          { name: 'a', url: a.url, maxInstances: 4 },
          { name: 'b', url: b.url, maxInstances: 4 },
        ],
        templates: { demo: { ...DEMO_TEMPLATE, docker: demoDocker() } },
        providerExtra: { requestTimeout: '3s' },
      }),
    })
    key = srv.adminKey!
  })

  after(async () => {
    if (stopped) process.kill(b.pid, 'SIGCONT')
    await srv?.kill('SIGTERM')
    await a?.stop()
    await b?.stop()
    if (cwd) rmSync(cwd, { recursive: true, force: true })
  })

  it('spreads sessions, replaces a stopped host’s sessions under the same URLs, and uses it again', async () => {
    const users = ['u0', 'u1', 'u2', 'u3']
    const sessions: { instanceId: string; url: string }[] = []
    for (const u of users) sessions.push(await requestReady(srv, key, u, 'demo'))
    const onA = await running(a)
    const onB = await running(b)
    assert.equal(onA.size, 2, 'two sessions on a')
    assert.equal(onB.size, 2, 'two sessions on b')
    const movedIdx = sessions.findIndex((s) => onB.has(s.instanceId))
    const moved = sessions[movedIdx]!
    const jar = new CookieJar()
    assert.equal((await http(moved.url, jar)).status, 200)

    process.kill(b.pid, 'SIGSTOP') // dockerd hangs: the server's calls to it time out
    stopped = true
    await waitFor(
      'b’s sessions to be replaced on a',
      async () => {
        const now = await running(a)
        return sessions.every((s) => now.has(s.instanceId)) ? true : undefined
      },
      120_000,
    )
    for (const [i, s] of sessions.entries()) await waitReady(srv, key, s.instanceId, users[i]!)
    const again = await http(`${srv.url}/s/${moved.instanceId}/`, jar)
    assert.equal(again.status, 200, 'the same URL and cookie reach the replacement on a')
    assert.equal((await running(a)).get(moved.instanceId)!.Labels['studiopool.generation'], '1')

    process.kill(b.pid, 'SIGCONT')
    stopped = false
    await waitFor(
      'b’s superseded containers to be removed',
      async () => ((await running(b)).size === 0 ? true : undefined),
      120_000,
    )
    // a is full (maxInstances 4): new sessions go to b, which answers again.
    const more = [await requestReady(srv, key, 'u4', 'demo'), await requestReady(srv, key, 'u5', 'demo')]
    const nowB = await running(b)
    assert.ok(
      more.every((s) => nowB.has(s.instanceId)),
      'the returned host takes new sessions',
    )
  })
})
