/**
 * kill -9 of the server at random moments during requests and deletes (issue 9, item 3), bounded:
 * ROUNDS rounds per store with the real binary and the local provider. After each restart, once the
 * pool has settled, it checks that no user has two live instances of a template, that every live
 * instance has its process, that every session process has its record and its live instance (none
 * leaked or duplicated), and that every assignment whose instance ended is closed in the history.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { localScope } from '../../src/providers/local/index.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { waitFor } from '../helpers/wait.js'
import { api, DEMO_APP, isAlive, killAll, spawnServer, type ServerProcess } from '../helpers/server-process.js'

const ROUNDS = Number(process.env.STUDIOPOOL_KILL_ROUNDS ?? 10)
const USERS = ['u0', 'u1', 'u2', 'u3', 'u4', 'u5']
const POOL = 'studiopool'

const config = (storeYaml: string) => `
server: { dataDir: ./data }
${storeYaml}
worker: { interval: 200ms, orphanGrace: 1s }
templates:
  demo:
    provider: local
    minFree: 1
    maxInstances: 5
    startTimeout: 20s
    healthPath: /healthz
    local: { command: [node, ${JSON.stringify(DEMO_APP)}, --port, '{{port}}', --base-path, '{{basePath}}'], stopGrace: 500 }
`

interface View {
  instanceId: string
  state: string
  userId: string | null
  template: string
}

/** Group leaders carrying the provider's marker (its scope): every session process it started. */
function markedSessions(scope: string): Map<number, string> {
  const out = new Map<number, string>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(f[2]) !== Number(name) || f[0] === 'Z') continue
      const env = readFileSync(`/proc/${name}/environ`, 'latin1').split('\0')
      if (!env.includes(`STUDIOPOOL_SCOPE=${scope}`)) continue
      const id = env.find((kv) => kv.startsWith('STUDIOPOOL_INSTANCE_ID='))?.slice('STUDIOPOOL_INSTANCE_ID='.length)
      if (id) out.set(Number(name), id)
    } catch {
      // gone meanwhile
    }
  }
  return out
}

function recordOf(dataDir: string, id: string): { pid: number; state: string; labels: Record<string, string> } | null {
  try {
    return JSON.parse(readFileSync(join(dataDir, 'instances', id, 'instance.json'), 'utf8')) as {
      pid: number
      state: string
      labels: Record<string, string>
    }
  } catch {
    return null
  }
}

/** The instance a process belongs to now: its record's label (a queued request may have been handed it), else its marker. */
function holderOf(dataDir: string, markerId: string): string {
  return recordOf(dataDir, markerId)?.labels['studiopool:instance'] ?? markerId
}

/** The record of a live instance: its own, or the one of the free instance it was handed. */
function recordFor(dataDir: string, instanceId: string): { pid: number; state: string } | null {
  const own = recordOf(dataDir, instanceId)
  if (own) return own
  for (const id of readdirSync(join(dataDir, 'instances'))) {
    const r = recordOf(dataDir, id)
    if (r?.labels['studiopool:instance'] === instanceId && r.state === 'running') return r
  }
  return null
}

for (const kind of STORE_KINDS) {
  describe(`kill -9 loop (${kind.name})`, () => {
    const cwd = mkdtempSync(join(tmpdir(), `sp-killloop-${kind.name}-`))
    const dataDir = join(cwd, 'data')
    const scope = localScope(POOL, dataDir)
    let server: ServerProcess | undefined
    after(async () => {
      await server?.kill('SIGKILL')
      killAll(dataDir)
      rmSync(cwd, { recursive: true, force: true })
    })

    test(`${ROUNDS} rounds: no duplicate, no leak, no lost process, history closed`, async (t) => {
      const storeYaml =
        kind.name === 'sqlite'
          ? 'store: { driver: sqlite }'
          : `store: { driver: postgres, url: ${JSON.stringify(await kind.freshUrl())} }`
      const yaml = config(storeYaml)
      server = await spawnServer({ cwd, config: yaml })
      const key = server.adminKey!
      assert.ok(key)
      const known = new Map<string, string>() // userId → instanceId
      const stats = { requests: 0, deletes: 0, killedMidway: 0 }
      for (let round = 0; round < ROUNDS; round++) {
        const s = server
        // Requests and deletes in flight; the kill lands at a random moment among them.
        const ops = USERS.map(async (u, i) => {
          await new Promise((r) => setTimeout(r, Math.random() * 150))
          const id = known.get(u)
          try {
            if (id && (round + i) % 3 === 0) {
              stats.deletes++
              await api(s.url, key, 'POST', '/api/commands', { command: 'DELETE', payload: { instanceId: id } })
              known.delete(u)
            } else {
              stats.requests++
              const r = await api<{ instanceId: string }>(s.url, key, 'POST', '/api/commands', {
                command: 'REQUEST_SESSION',
                payload: { userId: u },
              })
              if (r.status === 200) known.set(u, r.body.instanceId)
            }
          } catch {
            stats.killedMidway++ // the server died under this call
          }
        })
        await new Promise((r) => setTimeout(r, 20 + Math.random() * 250))
        await s.kill('SIGKILL')
        await Promise.all(ops)

        server = await spawnServer({ cwd, config: yaml })
        const srv = server
        // Settled: no instance still on its way (the worker retries interrupted creates and reaps orphans).
        const live = await waitFor(
          `round ${round}: every live instance ready`,
          async () => {
            const r = await api<{ instances: View[] }>(srv.url, key, 'GET', '/api/v1/instances')
            const rows = r.body.instances
            return rows.every((i) => i.state === 'ready' || i.state === 'queued') ? rows : undefined
          },
          30_000,
          100,
        )
        // 1. No user with two live instances of a template.
        const owners = live.filter((i) => i.userId && i.state !== 'queued').map((i) => `${i.userId}/${i.template}`)
        assert.equal(
          new Set(owners).size,
          owners.length,
          `round ${round}: a user holds two instances: ${owners.join(', ')}`,
        )
        // 2. Every live instance has its process.
        for (const i of live.filter((v) => v.state === 'ready')) {
          const rec = recordFor(dataDir, i.instanceId)
          assert.ok(
            rec && rec.state === 'running' && isAlive(rec.pid),
            `round ${round}: ready instance ${i.instanceId} has no live process`,
          )
        }
        // 3. Every session process has its record and its live instance (orphans reaped after the 1 s grace).
        const liveIds = new Set(live.map((i) => i.instanceId))
        await waitFor(
          `round ${round}: no session process without its record and live instance (${JSON.stringify([...markedSessions(scope)])})`,
          () =>
            [...markedSessions(scope)].every(
              ([pid, id]) => liveIds.has(holderOf(dataDir, id)) && recordOf(dataDir, id)?.pid === pid,
            ),
          15_000,
          100,
        )
        const perInstance = new Map<string, number>()
        for (const id of markedSessions(scope).values())
          perInstance.set(holderOf(dataDir, id), (perInstance.get(holderOf(dataDir, id)) ?? 0) + 1)
        assert.ok(
          [...perInstance.values()].every((n) => n === 1),
          `round ${round}: an instance has two processes`,
        )
        // 4. History closed for every ended assignment.
        const hist = await api<{ history: { instanceId: string; endedAt: string | null }[] }>(
          srv.url,
          key,
          'GET',
          '/api/v1/history?limit=10000',
        )
        for (const h of hist.body.history) {
          if (h.endedAt === null)
            assert.ok(
              liveIds.has(h.instanceId),
              `round ${round}: assignment of ended instance ${h.instanceId} left open`,
            )
        }
      }
      t.diagnostic(
        `${kind.name}: ${ROUNDS} rounds, ${stats.requests} requests and ${stats.deletes} deletes sent, ${stats.killedMidway} cut by the kill; 0 duplicates, 0 leaks, 0 lost processes`,
      )
    })
  })
}
