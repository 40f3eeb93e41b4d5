/**
 * The slurm provider against a real single-node Slurm 22.05 cluster (test/helpers/slurm.ts): the
 * address the job reports, Slurm's reasons (pending, failed), jobs cancelled behind studiopool's
 * back, a controller outage, adoption after a restart, lost jobs, and the scheduler load.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { ProviderError } from '../../src/domain/errors.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE, type InstanceSpec } from '../../src/providers/provider.js'
import type { SlurmProvider } from '../../src/providers/slurm/index.js'
import { SLURM_TEST_USER, slurmSkipReason, startSlurm, type TestSlurm } from '../helpers/slurm.js'
import { waitFor } from '../helpers/wait.js'
import { makeSlurmProvider, silent, slurmTemplate, type MadeProvider } from './slurm-fixture.js'

const skip = slurmSkipReason()
const POOL = 'slurm-test'
const op = { log: silent }
const CPUS = 4

function spec(template = slurmTemplate(), id = newInstanceId()): InstanceSpec {
  return {
    id,
    poolId: POOL,
    template,
    basePath: `/s/${id}/`,
    labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: template.name },
    progressUrl: `http://127.0.0.1:9/api/v1/instances/${id}/progress`,
    progressToken: 'progress-token',
    appToken: 'app-token',
    ownerId: 'alice',
    sessionUrl: `http://127.0.0.1:1/s/${id}/`,
  }
}

describe('slurm provider on a real cluster', { skip: skip ?? undefined, timeout: 600_000 }, () => {
  let slurm: TestSlurm
  let made: MadeProvider
  let provider: SlurmProvider
  const cleanups: (() => Promise<void>)[] = []

  before(async () => {
    slurm = await startSlurm({ cpus: CPUS })
    made = await makeSlurmProvider(slurm, POOL)
    provider = made.provider
  })
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {})
    await made?.cleanup()
    await slurm?.stop()
  })

  async function describeOne(ref: string) {
    return (await provider.describe([ref], op)).get(ref)
  }

  it('the job runs as the session account and the app answers at the host:port the job reports', async () => {
    const inst = await provider.create(spec(), op)
    const address = await waitFor('the reported address', async () => (await describeOne(inst.ref))?.address, 30_000)
    const res = await fetch(`${address}/healthz`)
    assert.equal(res.status, 200)
    const [user, state] = slurm.cmd('/usr/bin/squeue', ['-h', '-j', inst.ref, '-o', '%u %T']).stdout.trim().split(' ')
    assert.equal(user, SLURM_TEST_USER)
    assert.equal(state, 'RUNNING')
    const described = await describeOne(inst.ref)
    assert.equal(described?.state, 'running')
    assert.match(described?.message ?? '', /on sp/)
    await provider.destroy(inst.ref, op)
  })

  it("a job that fails at start says so with Slurm's state and reason", async () => {
    const inst = await provider.create(spec(slurmTemplate({ script: 'echo boom >&2; exit 3' })), op)
    const ended = await waitFor(
      'the job to fail',
      async () => {
        const d = await describeOne(inst.ref)
        return d?.state === 'terminated' ? d : null
      },
      30_000,
    )
    assert.match(ended.message ?? '', new RegExp(`Slurm job ${inst.ref} FAILED \\(NonZeroExitCode\\)`))
    assert.equal(ended.endReason, 'failed')
  })

  it('sbatch refusing a job fails the create with its reason, not a stack trace', async () => {
    await assert.rejects(provider.create(spec(slurmTemplate({ partition: 'nosuchpartition' })), op), (err) => {
      assert.ok(err instanceof ProviderError)
      assert.match(err.message, /sbatch refused the job: .*[Ii]nvalid partition/)
      return true
    })
  })

  it('a pending job on a full cluster shows its reason', async () => {
    const big = slurmTemplate({ cpus: CPUS })
    const first = await provider.create(spec(big), op)
    await waitFor('the first job to run', async () => (await describeOne(first.ref))?.state === 'running', 30_000)
    const second = await provider.create(spec(big), op)
    const pending = await waitFor(
      'a pending reason',
      async () => {
        const d = await describeOne(second.ref)
        return d?.state === 'pending' && /Resources|Priority/.test(d.message ?? '') ? d : null
      },
      30_000,
    )
    assert.match(pending.message ?? '', /^waiting in the Slurm queue: (Resources|Priority)/)
    await provider.destroy(second.ref, op)
    await provider.destroy(first.ref, op)
  })

  it("a job scancelled behind studiopool's back reads as terminated (CANCELLED), to be replaced", async () => {
    const inst = await provider.create(spec(), op)
    await waitFor('the reported address', async () => (await describeOne(inst.ref))?.address, 30_000)
    assert.equal(slurm.cmd('/usr/bin/scancel', [inst.ref]).code, 0)
    const gone = await waitFor(
      'the job to end',
      async () => {
        const d = await describeOne(inst.ref)
        return d?.state === 'terminated' ? d : null
      },
      30_000,
    )
    assert.match(gone.message ?? '', /CANCELLED/)
    assert.equal(gone.endReason, undefined, 'a cancelled job is replaced, not ended for a reason')
  })

  it('while slurmctld is down list and describe fail as retryable; the job keeps running and is found again', async () => {
    const inst = await provider.create(spec(), op)
    const address = await waitFor('the reported address', async () => (await describeOne(inst.ref))?.address, 30_000)
    await slurm.stopController()
    try {
      // Past the poll interval: a fresh query, which must fail, never read as "no jobs".
      await waitFor(
        'list to fail as retryable',
        async () => {
          try {
            await provider.list(op)
            return false
          } catch (err) {
            return err instanceof ProviderError && err.retryable
          }
        },
        30_000,
      )
      await assert.rejects(provider.describe([inst.ref], op), (err) => err instanceof ProviderError && err.retryable)
      // The app still answers: a controller outage is not a session outage.
      assert.equal((await fetch(`${address}/healthz`)).status, 200)
    } finally {
      await slurm.startController()
    }
    const back = await waitFor(
      'the job to be listed running again',
      async () => {
        const d = (await provider.list(op)).find((i) => i.ref === inst.ref)
        return d?.state === 'running' ? d : null
      },
      60_000,
    )
    assert.equal(back.address, address)
    await provider.destroy(inst.ref, op)
  })

  it('a restarted server adopts its jobs; one killed right after sbatch adopts the job instead of submitting again', async () => {
    const s = spec()
    const inst = await provider.create(s, op)
    // As if the server died between sbatch and recording the job id.
    const file = join(made.dataDir, 'slurm', `${s.id}.json`)
    const rec = JSON.parse(readFileSync(file, 'utf8')) as { jobId: string | null }
    rec.jobId = null
    writeFileSync(file, JSON.stringify(rec))
    const restarted = await makeSlurmProvider(slurm, POOL, {}, made.dataDir)
    const listed = (await restarted.provider.list(op)).filter((i) => i.instanceId === s.id && i.state !== 'terminated')
    assert.deepEqual(
      listed.map((i) => i.ref),
      [inst.ref],
    )
    const again = await restarted.provider.create(s, op)
    assert.equal(again.ref, inst.ref, 'the same job')
    assert.equal(restarted.provider.cli.calls.get('sbatch') ?? 0, 0, 'no second sbatch')
    await restarted.provider.destroy(inst.ref, op)
  })

  it('a job squeue no longer shows keeps its last state for lostGrace, then ends', async () => {
    const lost = await makeSlurmProvider(slurm, POOL, { lostGrace: 1500 })
    cleanups.push(lost.cleanup)
    const id = newInstanceId()
    writeFileSync(
      join(lost.dataDir, 'slurm', `${id}.json`),
      JSON.stringify({
        version: 1,
        instanceId: id,
        template: 'demo',
        jobName: `studiopool.${POOL}.${id}`,
        jobId: '99999',
        labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'demo' },
        user: SLURM_TEST_USER,
        submittedAt: Date.now() - 60_000,
        lastState: 'running',
        lastAddress: 'http://127.0.0.1:20001',
      }),
    )
    const first = (await lost.provider.describe(['99999'], op)).get('99999')
    assert.equal(first?.state, 'running', 'missing once is not gone')
    assert.equal(first?.address, 'http://127.0.0.1:20001')
    const ended = await waitFor(
      'the lost job to end after its grace',
      async () => {
        const d = (await lost.provider.describe(['99999'], op)).get('99999')
        return d?.state === 'terminated' ? d : null
      },
      30_000,
    )
    assert.match(ended.message ?? '', /no longer knows job 99999/)
  })

  it('500 instances: one squeue per cycle (list and describe of all refs), counted on PATH', async () => {
    const bin = mkdtempSync(join(tmpdir(), 'studiopool-slurm-bin-'))
    cleanups.push(async () => rmSync(bin, { recursive: true, force: true }))
    const counter = join(bin, 'squeue.count')
    writeFileSync(counter, '')
    for (const cmd of ['sbatch', 'scancel', 'scontrol', 'id'])
      writeFileSync(join(bin, cmd), `#!/bin/sh\nexec ${cmd === 'id' ? '/usr/bin/id' : `/usr/bin/${cmd}`} "$@"\n`)
    writeFileSync(join(bin, 'squeue'), `#!/bin/sh\necho x >> ${counter}\nexec /usr/bin/squeue "$@"\n`)
    for (const cmd of ['sbatch', 'scancel', 'scontrol', 'squeue', 'id']) chmodSync(join(bin, cmd), 0o755)
    const counted = await makeSlurmProvider(slurm, 'slurm-load', { binDir: bin, pollInterval: 2000 })
    cleanups.push(counted.cleanup)
    // Held jobs: queued at the controller like real sessions waiting for a node, none of them running.
    const t = slurmTemplate({ extraArgs: ['--hold'] })
    const refs: string[] = []
    for (let i = 0; i < 500; i++) {
      const s = spec(t)
      refs.push(
        (
          await counted.provider.create(
            { ...s, poolId: 'slurm-load', labels: { ...s.labels, [LABEL_POOL]: 'slurm-load' } },
            op,
          )
        ).ref,
      )
    }
    const before = readFileSync(counter, 'utf8').split('\n').filter(Boolean).length
    const t0 = performance.now()
    const listed = await counted.provider.list(op)
    const described = await counted.provider.describe(refs, op)
    const ms = performance.now() - t0
    const after = readFileSync(counter, 'utf8').split('\n').filter(Boolean).length
    assert.equal(listed.length, 500)
    assert.equal(described.size, 500)
    assert.ok(after - before <= 1, `at most one squeue for the cycle, got ${after - before}`)
    console.log(`# slurm: list + describe of 500 jobs: ${after - before} squeue, ${ms.toFixed(0)} ms`)
    slurm.cmd('/usr/bin/scancel', refs)
  })
})
