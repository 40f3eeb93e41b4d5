/**
 * The pool engine (PoolService + Worker, a real SQLite store) over the slurm provider and a real
 * single-node cluster: what a user notices when the scheduler misbehaves.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { loadConfig } from '../../src/config/load.js'
import type { Instance } from '../../src/domain/instance.js'
import { RouteHub } from '../../src/gateway/route-hub.js'
import { PoolService, type FaultHooks } from '../../src/pool/pool-service.js'
import { Worker } from '../../src/pool/worker.js'
import { DEMO_APP_SCRIPT } from '../../src/demo-app/index.js'
import { SlurmProvider } from '../../src/providers/slurm/index.js'
import type { Store } from '../../src/store/store.js'
import { SLURM_TEST_USER, slurmSkipReason, startSlurm, type TestSlurm } from '../helpers/slurm.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { waitFor } from '../helpers/wait.js'
import { silent } from './slurm-fixture.js'

const skip = slurmSkipReason()
const POOL = 'slurm-pool'
const CPUS = 3
const OUTAGE_MS = 30_000

function yaml(slurmConf: string): string {
  const app = (extra: string) =>
    `{ script: "exec ${process.execPath} ${DEMO_APP_SCRIPT}", user: ${SLURM_TEST_USER}, hostCommand: "echo 127.0.0.1"${extra} }`
  return `
pool: { id: ${POOL}, maxInstances: 1000 }
worker: { enabled: false }
providers:
  slurm: { env: { SLURM_CONF: "${slurmConf}" }, pollInterval: 200, runAs: uid }
templates:
  demo: { provider: slurm, minFree: 0, healthPath: /healthz, startTimeout: 120s, slurm: ${app('')} }
  big: { provider: slurm, minFree: 0, healthPath: /healthz, startTimeout: 120s, slurm: ${app(`, cpus: ${CPUS}`)} }
  load: { provider: slurm, minFree: 0, maxInstances: 1000, healthPath: /healthz, startTimeout: 1h, slurm: ${app(`, cpus: ${CPUS}`)} }
  broken:
    provider: slurm
    minFree: 0
    healthPath: /healthz
    slurm: { script: "echo 'cannot start' >&2; exit 3", user: ${SLURM_TEST_USER}, hostCommand: "echo 127.0.0.1" }
`
}

interface Engine {
  pool: PoolService
  worker: Worker
  provider: SlurmProvider
  close(): Promise<void>
}

describe('pool over slurm', { skip: skip ?? undefined, timeout: 900_000 }, () => {
  let slurm: TestSlurm
  let store: Store
  let dataDir: string
  let engine: Engine
  const engines: Engine[] = []
  const temps: string[] = []

  async function makeEngine(faults?: FaultHooks, settings: Record<string, unknown> = {}): Promise<Engine> {
    const config = loadConfig({ text: yaml(slurm.env.SLURM_CONF!), env: {}, cwd: '/tmp' })
    const provider = new SlurmProvider({
      poolId: POOL,
      dataDir,
      settings: { ...(config.providers.slurm ?? {}), ...settings },
      log: silent,
    })
    await provider.init({ log: silent })
    const providers = new Map([['slurm', provider]])
    const pool = new PoolService({ config, store, providers, routes: new RouteHub(), log: silent, faults })
    const worker = new Worker({ config, store, pool, providers, log: silent })
    const e = {
      pool,
      worker,
      provider,
      close: async () => {
        await worker.stop()
        await pool.close()
      },
    }
    engines.push(e)
    return e
  }

  before(async () => {
    slurm = await startSlurm({ cpus: CPUS })
    store = await STORE_KINDS.find((k) => k.name === 'sqlite')!.make({ poolId: POOL })
    dataDir = mkdtempSync(join(tmpdir(), 'studiopool-slurm-pool-'))
    temps.push(dataDir)
    engine = await makeEngine()
  })
  after(async () => {
    for (const e of engines) await e.close().catch(() => {})
    await slurm?.stop()
    for (const t of temps) rmSync(t, { recursive: true, force: true })
  })

  /** Runs worker cycles until `pred` holds for the instance. */
  async function cycleUntil(id: string, pred: (i: Instance) => boolean, what: string, e = engine): Promise<Instance> {
    return waitFor(
      what,
      async () => {
        await e.worker.runOnce()
        const i = await store.getInstance(id)
        return i && pred(i) ? i : null
      },
      120_000,
    )
  }

  async function readySession(user: string, template = 'demo'): Promise<Instance> {
    const r = await engine.pool.request({ userId: user, template })
    return cycleUntil(r.instance.id, (i) => i.state === 'ready', `${user}'s session to be ready`)
  }

  it(`slurmctld stopped for ${OUTAGE_MS / 1000} s: sessions stay assigned and routable, nothing is cancelled or replaced`, async () => {
    const a = await readySession('alice')
    const b = await readySession('bob')
    await slurm.stopController()
    const until = Date.now() + OUTAGE_MS
    let cycles = 0
    try {
      while (Date.now() < until) {
        await engine.worker.runOnce()
        cycles++
        for (const s of [a, b]) {
          const now = (await store.getInstance(s.id))!
          assert.equal(now.state, 'ready')
          assert.equal(now.providerRef, s.providerRef)
          assert.equal(now.generation, s.generation)
          assert.equal(now.ownerId, s.ownerId)
          assert.equal((await fetch(`${now.address}/healthz`)).status, 200, 'the app answers at its route')
        }
      }
    } finally {
      await slurm.startController()
    }
    assert.ok(cycles > 1)
    await engine.worker.runOnce()
    for (const s of [a, b]) {
      const now = (await store.getInstance(s.id))!
      assert.equal(now.state, 'ready')
      assert.equal(now.providerRef, s.providerRef, 'the same job, reconciled')
      const q = slurm.cmd('/usr/bin/squeue', ['-h', '-j', s.providerRef!, '-o', '%T']).stdout.trim()
      assert.equal(q, 'RUNNING')
      const audit = await store.listAudit({ instanceId: s.id })
      assert.ok(!audit.some((e) => e.event === 'replaced'), 'not replaced')
    }
    for (const s of [a, b]) await engine.pool.release(s.id, 'user')
  })

  it("a job scancelled behind studiopool's back is replaced under the same URL", async () => {
    const a = await readySession('carol')
    assert.equal(slurm.cmd('/usr/bin/scancel', [a.providerRef!]).code, 0)
    const back = await cycleUntil(
      a.id,
      (i) => i.state === 'ready' && i.providerRef !== a.providerRef,
      'the session to be replaced',
    )
    assert.equal(back.id, a.id, 'same instance id, same /s/<id>/ URL')
    assert.equal(back.ownerId, 'carol')
    assert.equal(back.generation, a.generation + 1)
    await engine.pool.release(a.id, 'user')
  })

  it("a job that fails at start: the user sees Slurm's reason", async () => {
    const r = await engine.pool.request({ userId: 'dave', template: 'broken' })
    const seen = await cycleUntil(
      r.instance.id,
      (i) => /FAILED \(NonZeroExitCode\)/.test(`${i.failureReason ?? ''} ${i.progressMessage}`),
      "Slurm's reason",
    )
    assert.match(`${seen.failureReason} ${seen.progressMessage}`, /Slurm job \d+ FAILED \(NonZeroExitCode\)/)
    await engine.pool.release(r.instance.id, 'user').catch(() => {})
  })

  it('a pending job on a full cluster shows its reason as launch progress', async () => {
    const first = await readySession('erin', 'big')
    const r = await engine.pool.request({ userId: 'frank', template: 'big' })
    const waiting = await cycleUntil(
      r.instance.id,
      (i) => i.state === 'starting' && /waiting in the Slurm queue: (Resources|Priority)/.test(i.progressMessage),
      'the pending reason as progress',
    )
    assert.match(waiting.progressMessage, /^waiting in the Slurm queue/)
    await engine.pool.release(r.instance.id, 'user')
    await engine.pool.release(first.id, 'user')
  })

  it('a server killed right after sbatch: the job is adopted, not duplicated', async () => {
    let hang: () => void = () => {}
    const dying = await makeEngine({ afterProviderCreate: () => new Promise<void>((r) => (hang = r)) })
    const r = await dying.pool.request({ userId: 'grace', template: 'demo' })
    await waitFor(
      'the job to be submitted',
      () => slurm.cmd('/usr/bin/squeue', ['-h', '-n', `studiopool.${POOL}.${r.instance.id}`, '-o', '%i']).stdout.trim(),
      30_000,
    )
    assert.equal((await store.getInstance(r.instance.id))!.providerRef, null, 'the store never heard of the job')
    // The "killed" server's engine is abandoned; a new one (new provider object, same data directory) takes over.
    const next = await makeEngine()
    const ready = await cycleUntil(r.instance.id, (i) => i.state === 'ready', 'the adopted session to be ready', next)
    const jobs = slurm
      .cmd('/usr/bin/squeue', ['-h', '-n', `studiopool.${POOL}.${r.instance.id}`, '-t', 'PD,R', '-o', '%i'])
      .stdout.trim()
      .split('\n')
    assert.deepEqual(jobs, [ready.providerRef], 'one job for the instance')
    assert.equal(next.provider.cli.calls.get('sbatch') ?? 0, 0, 'the new server submitted nothing')
    hang()
    await next.pool.release(r.instance.id, 'user')
  })

  it('500 sessions: the worker makes at most one squeue per cycle (counted by a wrapper on PATH)', async () => {
    const bin = mkdtempSync(join(tmpdir(), 'studiopool-slurm-bin-'))
    temps.push(bin)
    const counter = join(bin, 'squeue.count')
    writeFileSync(counter, '')
    for (const cmd of ['sbatch', 'scancel', 'scontrol', 'id'])
      writeFileSync(join(bin, cmd), `#!/bin/sh\nexec /usr/bin/${cmd} "$@"\n`)
    writeFileSync(join(bin, 'squeue'), `#!/bin/sh\necho x >> ${counter}\nexec /usr/bin/squeue "$@"\n`)
    for (const cmd of ['sbatch', 'scancel', 'scontrol', 'squeue', 'id']) chmodSync(join(bin, cmd), 0o755)
    // pollInterval 0: no answer is reused, so the count is what one cycle itself asks for.
    const counted = await makeEngine(undefined, { binDir: bin, pollInterval: 0 })
    const count = () => readFileSync(counter, 'utf8').split('\n').filter(Boolean).length
    // Each job wants the whole node: one runs, 499 wait in the queue (Resources/Priority), as on a busy cluster.
    for (let i = 0; i < 500; i++) await counted.pool.request({ userId: `u${i}`, template: 'load' })
    await waitFor(
      'the 500 jobs to be submitted',
      async () => {
        await counted.worker.runOnce()
        const rows = await store.listInstances({ states: ['starting', 'ready'], limit: 1000 })
        return rows.filter((r) => r.template === 'load').length === 500
      },
      600_000,
    )
    await counted.worker.runOnce() // the first reconcile writes every pending reason; the cycles below are steady state
    const times: number[] = []
    const calls: number[] = []
    for (let i = 0; i < 3; i++) {
      const c0 = count()
      const t0 = performance.now()
      const report = await counted.worker.runOnce()
      times.push(performance.now() - t0)
      calls.push(count() - c0)
      assert.equal(report?.replaced ?? 0, 0)
    }
    for (const c of calls) assert.ok(c === 1, `one squeue per cycle, got ${calls.join(', ')}`)
    const rows = (await store.listInstances({ states: ['starting', 'ready'], limit: 1000 })).filter(
      (r) => r.template === 'load',
    )
    assert.equal(rows.length, 500, 'nothing failed or was replaced')
    assert.ok(
      rows.filter((r) => r.state === 'starting').some((r) => /waiting in the Slurm queue/.test(r.progressMessage)),
    )
    console.log(
      `# slurm worker, 500 sessions: squeue per cycle ${calls.join(', ')}; cycle ${times.map((t) => t.toFixed(0)).join(', ')} ms`,
    )
    for (const r of rows) await counted.pool.release(r.id, 'user').catch(() => {})
  })
})
