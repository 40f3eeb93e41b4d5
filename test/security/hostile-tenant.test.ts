/**
 * The hostile-tenant suite (architecture.md contract 5, issue 8): the real server (`studiopool serve`)
 * with the shipped examples/studiopool.yaml, real Jupyter sessions for alice and bob and a demo
 * session for carol. Code run inside alice's kernel, through the gateway, tries every attack in
 * test/security/attacks.py.
 *
 * - As root (CI): sessions are isolated; every attack must fail, and alice is neither root nor the
 *   server's account.
 * - Unprivileged (the server as `nobody`): sessions are not isolated. The suite records which
 *   attacks succeed there, so that the README's warning is backed by a test, and checks that the
 *   defences which do not depend on the account still hold (the app token, the logins).
 */
import assert from 'node:assert/strict'
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { waitFor } from '../helpers/wait.js'
import { openJupyter, runInKernel } from '../helpers/jupyter.js'
import { EXAMPLES, e2eSkipReason } from '../e2e/harness.js'
import { api, killAll, spawnServer, type ServerProcess } from '../helpers/server-process.js'

const IS_ROOT = process.getuid?.() === 0
const NOBODY = 65534
const ATTACKS = readFileSync(join(import.meta.dirname, 'attacks.py'), 'utf8')
const skip = e2eSkipReason()

interface Attack {
  ok: boolean
  detail: string
}
type Report = Record<string, Attack> & { uid: number; gid: number; groups: number[] }

interface Record_ {
  pid: number
  address: string
  home: string
}

/** The shipped example, changed only where a test must be quick or self-contained. */
function exampleConfig(): string {
  const text = readFileSync(join(EXAMPLES, 'studiopool.yaml'), 'utf8').replaceAll('{{configDir}}', EXAMPLES)
  const doc = parseYaml(text) as Record<string, Record<string, unknown>>
  doc.worker = { ...doc.worker, interval: '500ms' }
  for (const t of Object.values(doc.templates as Record<string, Record<string, unknown>>)) t.minFree = 0
  return stringifyYaml(doc)
}

async function requestReady(
  srv: ServerProcess,
  key: string,
  userId: string,
  template: string,
): Promise<{ instanceId: string; url: string }> {
  const r = await api<{ instanceId: string; url: string }>(srv.url, key, 'POST', '/api/commands', {
    command: 'REQUEST_SESSION',
    payload: { userId, template },
  })
  assert.equal(r.status, 200, JSON.stringify(r.body))
  await waitFor(
    `${template} for ${userId} to be ready`,
    async () => {
      const st = await api<{ instance: { state: string; failureReason: string | null } }>(
        srv.url,
        key,
        'POST',
        '/api/commands',
        {
          command: 'GET_STATUS',
          payload: { instanceId: r.body.instanceId, userId },
        },
      )
      if (st.body.instance.state === 'failed') throw new Error(`failed: ${st.body.instance.failureReason}`)
      return st.body.instance.state === 'ready' ? true : undefined
    },
    90_000,
  )
  return r.body
}

function record(dataDir: string, id: string): Record_ {
  return JSON.parse(readFileSync(join(dataDir, 'instances', id, 'instance.json'), 'utf8')) as Record_
}

/** Starts the server (as `runAs` when given), three sessions, and runs the attacks in alice's kernel. */
async function attackFromAlice(
  runAs: number | undefined,
): Promise<{ report: Report; serverUid: number; readyIsolation: unknown; cleanup: () => Promise<void> }> {
  const cwd = mkdtempSync(join(tmpdir(), 'studiopool-hostile-'))
  chmodSync(cwd, 0o711) // session accounts must pass through to their homes (<dataDir>-sessions)
  if (runAs !== undefined) chownSync(cwd, runAs, runAs)
  const srv = await spawnServer({
    cwd,
    config: exampleConfig(),
    runAs,
    timeoutMs: 60_000,
    env: { ARENA_POOL_SERVICE_KEY: 'arena-secret-key-0123456789abcdef', STUDIOPOOL_LOG_LEVEL: 'warn' },
  })
  const cleanup = async () => {
    await srv.kill('SIGTERM')
    killAll(join(cwd, 'data'))
    rmSync(cwd, { recursive: true, force: true })
  }
  try {
    const key = srv.adminKey!
    assert.ok(key, 'the bootstrap admin key')
    const [alice, bob, carol] = await Promise.all([
      requestReady(srv, key, 'alice', 'jupyter'),
      requestReady(srv, key, 'bob', 'jupyter'),
      requestReady(srv, key, 'carol', 'demo'),
    ])
    const aliceK = await openJupyter(srv, alice.url, alice.instanceId)
    const bobK = await openJupyter(srv, bob.url, bob.instanceId)
    const dataDir = join(cwd, 'data')
    const bobRec = record(dataDir, bob.instanceId)
    const carolRec = record(dataDir, carol.instanceId)
    const aliceRec = record(dataDir, alice.instanceId)
    const bobAddr = new URL(bobRec.address)
    const carolAddr = new URL(carolRec.address)
    const aliceHost = new URL(aliceRec.address).hostname
    // The host's end of alice's veth (….1 of her /30), when she has one.
    const hostAddrs = aliceHost.startsWith('127.')
      ? []
      : [aliceHost.replace(/\.(\d+)$/, (_m, n: string) => `.${Number(n) - 1}`)]
    const params = {
      serverPid: srv.pid,
      serverPort: Number(new URL(srv.url).port),
      dataDir,
      store: join(dataDir, 'studiopool.db'),
      bobPid: bobRec.pid,
      bobHome: bobRec.home,
      bobRecord: join(dataDir, 'instances', bob.instanceId, 'instance.json'),
      aliceRecord: join(dataDir, 'instances', alice.instanceId, 'instance.json'),
      bobHost: bobAddr.hostname,
      bobPort: Number(bobAddr.port),
      bobBase: `/s/${bob.instanceId}/`,
      bobKernel: bobK.kernelId,
      carolHost: carolAddr.hostname,
      carolPort: Number(carolAddr.port),
      hostAddrs,
      cookieName: 'studiopool_session',
    }
    const code = `PARAMS_B64 = ${JSON.stringify(Buffer.from(JSON.stringify(params)).toString('base64'))}\n${ATTACKS}`
    const out = await runInKernel(srv, aliceK, code)
    const line = out.split('\n').find((l) => l.startsWith('ATTACKS '))
    assert.ok(line, `the attack script printed its report:\n${out}`)
    const ready = (await (await fetch(`${srv.url}/readyz`)).json()) as { isolation: unknown }
    return {
      report: JSON.parse(line.slice('ATTACKS '.length)) as Report,
      serverUid: runAs ?? process.getuid!(),
      readyIsolation: ready.isolation,
      cleanup,
    }
  } catch (err) {
    await cleanup()
    throw err
  }
}

function attacks(report: Report): [string, Attack][] {
  return Object.entries(report).filter(
    (e): e is [string, Attack] => typeof e[1] === 'object' && e[1] !== null && 'ok' in e[1],
  )
}

describe('hostile tenant: local sessions', { skip }, () => {
  describe(
    'isolated (the server runs as root)',
    { skip: IS_ROOT ? false : 'needs root: the server must be able to switch accounts' },
    () => {
      let res: Awaited<ReturnType<typeof attackFromAlice>>
      before(async () => {
        res = await attackFromAlice(undefined)
      })
      after(async () => {
        await res?.cleanup()
      })

      test('alice runs as her own unprivileged account, without supplementary groups', () => {
        assert.notEqual(res.report.uid, 0, 'not root')
        assert.notEqual(res.report.uid, res.serverUid, "not the server's account")
        assert.deepEqual(
          res.report.groups.filter((g) => g !== res.report.gid),
          [],
          'no supplementary groups',
        )
        assert.deepEqual(
          res.readyIsolation,
          [{ provider: 'local', isolated: true }],
          '/readyz says the sessions are isolated',
        )
      })

      test("every attack from inside alice's kernel fails", (t) => {
        const all = attacks(res.report)
        assert.ok(all.length >= 20, `the whole attack list ran (${all.length})`)
        for (const [name, a] of all) t.diagnostic(`${a.ok ? 'SUCCEEDED' : 'failed   '} ${name}: ${a.detail}`)
        const succeeded = all.filter(([, a]) => a.ok).map(([n, a]) => `${n} (${a.detail})`)
        assert.deepEqual(succeeded, [], `attacks that succeeded:\n${succeeded.join('\n')}`)
      })
    },
  )

  describe(
    'unisolated (the server runs as an unprivileged account)',
    { skip: IS_ROOT ? false : 'needs root to start the server as another account' },
    () => {
      let res: Awaited<ReturnType<typeof attackFromAlice>>
      before(async () => {
        res = await attackFromAlice(NOBODY)
      })
      after(async () => {
        await res?.cleanup()
      })

      test('what a session can do when sessions are not isolated (the README warning)', (t) => {
        const all = new Map(attacks(res.report))
        for (const [name, a] of all) t.diagnostic(`${a.ok ? 'SUCCEEDED' : 'failed   '} ${name}: ${a.detail}`)
        assert.equal(res.report.uid, NOBODY, "sessions run as the server's own account")
        const ready = res.readyIsolation as { provider: string; isolated: boolean; notes: string[] }[]
        assert.equal(ready[0]?.isolated, false, '/readyz says the sessions are not isolated')
        assert.match(ready[0]!.notes.join(' '), /NOT isolated/)
        // What the warning says: the control plane's files and other sessions are open to every session.
        for (const name of [
          'read the store',
          'list the data directory',
          "read the server's environment",
          "read bob's record",
          "signal bob's process",
          'signal the server',
          "connect to bob's port",
          "use carol's demo app directly",
        ]) {
          assert.equal(all.get(name)?.ok, true, `${name} succeeds unisolated: ${all.get(name)?.detail}`)
        }
        // What holds whatever the account: Jupyter checks the app token only the gateway sends, and
        // no login trusts a connection from a session (dev login is off while sessions reach loopback).
        for (const name of [
          "use bob's Jupyter directly",
          "open bob's kernel WebSocket directly",
          'dev login as bob',
          'header login as bob',
        ]) {
          assert.equal(all.get(name)?.ok, false, `${name} fails even unisolated: ${all.get(name)?.detail}`)
        }
      })
    },
  )
})
