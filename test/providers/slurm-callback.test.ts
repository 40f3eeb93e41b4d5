/**
 * The job wrapper's address callback (issue 12), end to end: the real server (`start()`) on a
 * private single-node cluster, the job comment's `addr=` fallback off, so an instance's address can
 * only come from the callback. A normal job reports `{host, port}` once its app listens and becomes
 * ready there; a hostile job that reports another host, or a port outside its range (a control-plane
 * port), is refused with 400 and stays unroutable.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { pino } from 'pino'
import { request } from 'undici'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { loadConfig } from '../../src/config/load.js'
import { DEMO_APP_SCRIPT } from '../../src/demo-app/index.js'
import { start, type Running } from '../../src/main.js'
import { EXAMPLES } from '../e2e/harness.js'
import { SLURM_TEST_USER, slurmSkipReason, startSlurm, type TestSlurm } from '../helpers/slurm.js'
import { waitFor } from '../helpers/wait.js'

const skip = slurmSkipReason() ?? (existsSync('/usr/bin/curl') ? null : 'curl is not installed')

/** Reports two addresses that are not its own (with its own token), then never listens. */
const HOSTILE = [
  'o=/tmp/studiopool-hostile-{{instanceId}}',
  `for a in '{"host":"127.0.0.1","port":22}' '{"host":"10.9.8.7","port":21001}'; do`,
  `  printf 'header = "Authorization: Bearer %s"\\n' "$STUDIOPOOL_PROGRESS_TOKEN" |`,
  `    curl -s -o /dev/null -w '%{http_code}\\n' -K - -H 'Content-Type: application/json' \\`,
  `      --data-binary "{\\"progress\\":50,\\"address\\":$a}" "$STUDIOPOOL_PROGRESS_URL" >> "$o.tmp"`,
  'done',
  'mv "$o.tmp" "$o"',
  'exec sleep 600',
].join('\n')

describe(
  'Slurm: the address comes from the job wrapper’s callback',
  { skip: skip ?? undefined, timeout: 300_000 },
  () => {
    let slurm: TestSlurm
    let running: Running
    let adminKey = ''
    let dataDir: string
    const temps: string[] = []

    before(async () => {
      slurm = await startSlurm({ cpus: 2 })
      dataDir = mkdtempSync(join(tmpdir(), 'studiopool-slurm-callback-'))
      const doc = parseYaml(readFileSync(join(EXAMPLES, 'studiopool.yaml'), 'utf8')) as Record<string, unknown>
      doc.worker = { ...(doc.worker as object), interval: '500ms' }
      // The callback is this server as the job (on the loopback node) reaches it: its listen address.
      const { instanceCallbackUrl: _unused, ...server } = doc.server as Record<string, unknown>
      doc.server = server
      doc.pool = { ...(doc.pool as object), defaultTemplate: 'demo' }
      doc.providers = { slurm: { env: slurm.env, pollInterval: 300, runAs: 'uid', addressFromComment: false } }
      const slurmOf = (script: string) => ({
        user: SLURM_TEST_USER,
        hostCommand: 'echo 127.0.0.1',
        portRange: '21000-21999',
        script,
      })
      doc.templates = {
        demo: {
          provider: 'slurm',
          minFree: 0,
          startTimeout: '2m',
          healthPath: '/healthz',
          slurm: slurmOf(`exec ${process.execPath} ${DEMO_APP_SCRIPT}`),
        },
        hostile: { provider: 'slurm', minFree: 0, startTimeout: '5m', healthPath: '/healthz', slurm: slurmOf(HOSTILE) },
      }
      const config = loadConfig({ text: stringifyYaml(doc), env: {}, cwd: EXAMPLES, overrides: { port: 0, dataDir } })
      running = await start({ config, log: pino({ level: 'silent' }), onBootstrapKey: (k) => (adminKey = k) })
    })
    after(async () => {
      await running?.close()
      await slurm?.stop()
      if (dataDir) rmSync(dataDir, { recursive: true, force: true })
      for (const t of temps) rmSync(t, { force: true })
    })

    async function command<T>(name: string, payload: Record<string, unknown>): Promise<{ status: number; body: T }> {
      const res = await request(`${running.url}/api/commands`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ command: name, payload }),
      })
      return { status: res.statusCode, body: (await res.body.json()) as T }
    }

    async function session(userId: string, template: string): Promise<string> {
      const r = await command<{ instanceId: string }>('REQUEST_SESSION', { userId, template })
      assert.equal(r.status, 200, JSON.stringify(r.body))
      return r.body.instanceId
    }

    /** The environment of the job's wrapper (its first process that has the progress token). */
    function jobEnv(jobId: string): Record<string, string> {
      const pids = slurm
        .cmd('/usr/bin/scontrol', ['listpids', jobId])
        .stdout.split('\n')
        .map((l) => l.trim().split(/\s+/)[0])
      for (const pid of pids.filter((p) => p && /^\d+$/.test(p))) {
        let raw: string
        try {
          raw = readFileSync(`/proc/${pid}/environ`, 'utf8')
        } catch {
          continue
        }
        const env = Object.fromEntries(
          raw
            .split('\0')
            .filter(Boolean)
            .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
        )
        if (env.STUDIOPOOL_PROGRESS_TOKEN) return env
      }
      throw new Error(`no process of job ${jobId} with a progress token`)
    }

    const comment = (jobId: string) => slurm.cmd('/usr/bin/squeue', ['-h', '-j', jobId, '-o', '%k']).stdout.trim()

    it('a job reports host and port through its callback; the instance is ready at that address', async () => {
      const id = await session('alice', 'demo')
      const inst = await waitFor(
        'the session to be ready',
        async () => {
          const i = await running.store!.getInstance(id)
          if (i?.state === 'failed') throw new Error(`failed: ${i.failureReason}`)
          return i?.state === 'ready' ? i : null
        },
        120_000,
      )
      assert.match(inst.address ?? '', /^http:\/\/127\.0\.0\.1:21\d{3}$/, 'the node’s address, a port of the range')
      assert.doesNotMatch(comment(inst.providerRef!), /addr=/, 'not through the job comment')
      assert.equal((await fetch(`${inst.address}/healthz`)).status, 200, 'the app answers where the job said')

      // The job's own token (read from its environment, as root): a ready instance takes no new address.
      const env = jobEnv(inst.providerRef!)
      const late = await request(env.STUDIOPOOL_PROGRESS_URL!, {
        method: 'POST',
        headers: { authorization: `Bearer ${env.STUDIOPOOL_PROGRESS_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ progress: 50, address: { host: '127.0.0.1', port: 21999 } }),
      })
      assert.equal(late.statusCode, 409)
      assert.equal(((await late.body.json()) as { error: { code: string } }).error.code, 'CONFLICT')
      assert.equal((await running.store!.getInstance(id))!.address, inst.address, 'the route did not move')
    })

    it('another host or a port outside the range is refused (400) and the instance stays unroutable', async () => {
      const id = await session('mallory', 'hostile')
      const out = `/tmp/studiopool-hostile-${id}`
      temps.push(out)
      const codes = await waitFor(
        'the hostile job’s reports',
        () => (existsSync(out) ? readFileSync(out, 'utf8') : null),
        120_000,
      )
      assert.deepEqual(codes.trim().split('\n'), ['400', '400'])
      const inst = (await running.store!.getInstance(id))!
      assert.equal(inst.state, 'starting')
      assert.equal(inst.address, null, 'no address was taken')
      const st = await command<{ instance: { state: string } }>('GET_STATUS', { instanceId: id, userId: 'mallory' })
      assert.equal(st.body.instance.state, 'starting', 'not ready, not routable')
    })
  },
)
