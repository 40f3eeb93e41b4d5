import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, describe, it } from 'node:test'
import pino from 'pino'
import type { TemplateConfig } from '../../src/config/types.js'
import { ProviderError } from '../../src/domain/errors.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { probeHttp } from '../../src/providers/http-probe.js'
import { endSessionsUnder, LocalProvider, type LocalInstanceRecord } from '../../src/providers/local/index.js'
import {
  LABEL_INSTANCE,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type ProviderInstance,
} from '../../src/providers/provider.js'
import { makeLocalDemoTemplate, makeTemplate } from '../helpers/template.js'
import { waitFor } from '../helpers/wait.js'
import { killAll, localLeftovers, pidAlive, pidsInGroup } from './helpers.js'

const log = pino({ level: 'silent' })
const op = { log }
const POOL = 'local-test-pool'

function pidOf(ref: string): number {
  return Number(ref.split(':')[0])
}

/** A process this test starts itself, outside the provider (standing in for a reused pid, or a forged record's target). */
function startStranger(): { pid: number; startTime: string } {
  const stranger = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' })
  stranger.unref()
  const pid = stranger.pid!
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return { pid, startTime: stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]! }
}

/** A record of this pool, for a fresh instance id, naming a process the provider did not start. */
function foreignRecord(pid: number, startTime: string): LocalInstanceRecord {
  const id = newInstanceId()
  return {
    version: 1,
    instanceId: id,
    template: 'sh',
    pid,
    pgid: pid,
    startTime,
    port: 1,
    address: 'http://127.0.0.1:1',
    labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'sh' },
    command: ['sleep', '1000'],
    stopGraceMs: 100,
    createdAt: Date.now(),
    state: 'running',
  }
}

/** Writes a record where the provider on `dataDir` reads it. */
function plantRecord(dataDir: string, rec: LocalInstanceRecord): void {
  const dir = join(dataDir, 'instances', rec.instanceId)
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'instance.json'), JSON.stringify(rec))
}

function shTemplate(script: string, extra: Record<string, unknown> = {}): TemplateConfig {
  return makeTemplate({
    name: 'sh',
    provider: 'local',
    settings: { command: ['sh', '-c', script], stopGrace: 2000, ...extra },
  })
}

describe('local provider', () => {
  let dataDir: string
  let provider: LocalProvider
  /** Processes a test started itself, outside the provider, killed whatever happened. */
  const strangers = new Set<number>()

  function spec(template: TemplateConfig, id = newInstanceId(), poolId = POOL): InstanceSpec {
    return {
      id,
      poolId,
      template,
      basePath: `/s/${id}/`,
      labels: { [LABEL_POOL]: poolId, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: template.name },
      progressUrl: `http://127.0.0.1:9/api/v1/instances/${id}/progress`,
      progressToken: 'secret-progress-token',
      appToken: 'test-app-token',
      ownerId: null,
      sessionUrl: 'http://127.0.0.1:1/s/x/',
    }
  }

  async function create(p: LocalProvider, s: InstanceSpec): Promise<ProviderInstance> {
    return p.create(s, op)
  }

  function record(id: string): LocalInstanceRecord {
    return JSON.parse(readFileSync(join(dataDir, 'instances', id, 'instance.json'), 'utf8')) as LocalInstanceRecord
  }

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'studiopool-local-'))
    provider = new LocalProvider({ poolId: POOL, dataDir, settings: {}, log })
    await provider.init(op)
  })

  afterEach(() => {
    // Belt and braces: a failed assertion must leave neither processes nor their namespaces behind.
    endSessionsUnder(dataDir, { pools: [POOL] })
    killAll(strangers)
    strangers.clear()
  })

  after(() => {
    endSessionsUnder(dataDir, { pools: [POOL], dropFirewall: true })
    killAll(strangers)
    rmSync(dataDir, { recursive: true, force: true })
    rmSync(`${dataDir}-sessions`, { recursive: true, force: true })
    assert.deepEqual(localLeftovers(provider.scope), [], 'the tests left nothing of their scope on the host')
  })

  it('runs the demo app, which answers the readiness probe on its port, also under its base path', async () => {
    const s = spec(makeLocalDemoTemplate())
    const inst = await create(provider, s)
    assert.equal(inst.state, 'running')
    // Isolated (root): the session's own network namespace; otherwise a free port on loopback.
    assert.match(
      inst.address!,
      provider.isolation().sessionsReachLoopback ? /^http:\/\/127\.0\.0\.1:\d+$/ : /^http:\/\/10\.213\.\d+\.\d+:8888$/,
    )
    assert.match(inst.ref, /^\d+:\d+$/)
    await waitFor(
      'the demo app to answer',
      async () => (await probeHttp(inst.address!, '/healthz', { timeoutMs: 1000 })).ok,
    )
    const keep = await probeHttp(inst.address!, `${s.basePath}healthz`, { timeoutMs: 1000 })
    assert.deepEqual(keep, { ok: true, status: 200 })
    const headers = await fetch(`${inst.address}/headers`).then((r) => r.json() as Promise<{ instanceId: string }>)
    assert.equal(headers.instanceId, s.id, 'STUDIOPOOL_INSTANCE_ID reached the app')
    const rec = record(s.id)
    assert.equal(rec.pgid, rec.pid, 'the process leads its own group')
    assert.equal(rec.state, 'running')
    await provider.destroy(inst.ref, op)
    assert.equal(pidAlive(pidOf(inst.ref)), false)
    assert.equal(
      (await probeHttp(inst.address!, '/healthz', { timeoutMs: 1000 })).ok,
      false,
      'nothing answers after destroy',
    )
  })

  it('substitutes tokens in argv and env, sets the environment, and writes output.log', async () => {
    process.env.STUDIOPOOL_TEST_SECRET = 'must-not-leak'
    try {
      const t = shTemplate(
        'echo "argv port={{port}} base={{basePath}} id={{instanceId}} wd={{workdir}} host={{host}}"; ' +
          'echo "env PORT=$PORT BASE_PATH=$BASE_PATH ID=$STUDIOPOOL_INSTANCE_ID MINE=$MINE HOME=$HOME TOKEN=$STUDIOPOOL_PROGRESS_TOKEN URL=$STUDIOPOOL_PROGRESS_URL SECRET=${STUDIOPOOL_TEST_SECRET:-none}"; ' +
          'echo "stderr line" >&2; pwd; exec sleep 1000',
        { env: { MINE: 'p{{port}}-{{instanceId}}' } },
      )
      const s = spec(t)
      const inst = await create(provider, s)
      const { port, hostname: host } = new URL(inst.address!)
      const wd = provider.workdir(s.id)
      assert.ok(!wd.startsWith(dataDir + '/'), 'the working directory is outside the data directory')
      const logFile = join(dataDir, 'instances', s.id, 'output.log')
      const text = await waitFor('output.log to be complete', () => {
        const t = existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''
        return t.split('\n').includes(wd) ? t : ''
      })
      // Lines the process printed (the provider's own header line, which quotes the argv, is skipped).
      const lines = text.split('\n').filter((l) => !l.startsWith('--- studiopool'))
      assert.ok(lines.includes(`argv port=${port} base=/s/${s.id}/ id=${s.id} wd=${wd} host=${host}`), text)
      assert.ok(
        lines.includes(
          `env PORT=${port} BASE_PATH=/s/${s.id}/ ID=${s.id} MINE=p${port}-${s.id} HOME=${wd} TOKEN=secret-progress-token URL=${s.progressUrl} SECRET=none`,
        ),
        `environment as expected, and the server's other variables not passed on:\n${text}`,
      )
      assert.ok(lines.includes('stderr line'), 'stderr goes to the log too')
      assert.ok(lines.includes(wd), "the working directory is the instance's session directory")
      assert.ok(
        !existsSync(join(wd, 'instance.json')) && !existsSync(join(wd, 'output.log')),
        "no bookkeeping in the session's directory",
      )
      assert.ok(
        !record(s.id).command.join(' ').includes('secret-progress-token'),
        'the progress token is not written to instance.json',
      )
      await provider.destroy(inst.ref, op)
    } finally {
      delete process.env.STUDIOPOOL_TEST_SECRET
    }
  })

  it('destroy kills the whole process group and marks the record terminated, keeping the log', async () => {
    const s = spec(shTemplate('sleep 1000 & sleep 1000 & echo started; wait'))
    const inst = await create(provider, s)
    const pgid = pidOf(inst.ref)
    const members = await waitFor('three processes in the group', () => {
      const m = pidsInGroup(pgid)
      return m.length >= 3 ? m : null
    })
    assert.ok(members.includes(pgid))
    const t0 = Date.now()
    await provider.destroy(inst.ref, op)
    assert.ok(Date.now() - t0 < 2000, 'sh and sleep stop on SIGTERM, well before the grace ends')
    for (const pid of members) assert.equal(pidAlive(pid), false, `pid ${pid} of the group is gone`)
    assert.deepEqual(pidsInGroup(pgid), [])
    const rec = record(s.id)
    assert.equal(rec.state, 'terminated')
    assert.ok(rec.terminatedAt)
    assert.ok(existsSync(join(dataDir, 'instances', s.id, 'output.log')))
    const described = (await provider.describe([inst.ref], op)).get(inst.ref)
    assert.equal(described?.state, 'terminated')
    assert.equal(described?.address, null)
    await provider.destroy(inst.ref, op) // idempotent
  })

  it('SIGKILLs a group that ignores SIGTERM once the grace is over', async () => {
    const s = spec(
      shTemplate('trap "" TERM; sleep 1000 & echo trapped; while true; do sleep 0.05; done', { stopGrace: 400 }),
    )
    const inst = await create(provider, s)
    const logFile = join(dataDir, 'instances', s.id, 'output.log')
    await waitFor(
      'the trap to be set',
      () => existsSync(logFile) && readFileSync(logFile, 'utf8').split('\n').includes('trapped'),
    )
    const pgid = pidOf(inst.ref)
    const members = pidsInGroup(pgid)
    assert.ok(members.length >= 2)
    const t0 = Date.now()
    await provider.destroy(inst.ref, op)
    const took = Date.now() - t0
    assert.ok(took >= 400, `waited the grace first (${took} ms)`)
    assert.ok(took < 4000, `then killed promptly (${took} ms)`)
    for (const pid of members) assert.equal(pidAlive(pid), false, `pid ${pid} is gone`)
  })

  it('a new provider object on the same dataDir finds the running process and destroys it', async () => {
    const s = spec(makeLocalDemoTemplate())
    const inst = await create(provider, s)
    await waitFor(
      'the demo app to answer',
      async () => (await probeHttp(inst.address!, '/healthz', { timeoutMs: 1000 })).ok,
    )

    const restarted = new LocalProvider({ poolId: POOL, dataDir, settings: {}, log })
    await restarted.init(op)
    const listed = (await restarted.list(op)).find((i) => i.instanceId === s.id)
    assert.ok(listed, 'listed after the "restart"')
    assert.equal(listed.ref, inst.ref)
    assert.equal(listed.state, 'running')
    assert.equal(listed.address, inst.address)
    assert.equal(listed.labels[LABEL_TEMPLATE], 'demo')
    const described = (await restarted.describe([inst.ref], op)).get(inst.ref)
    assert.equal(described?.state, 'running')
    // create on the new object is idempotent too: the same process, not a second one.
    const again = await restarted.create(s, op)
    assert.equal(again.ref, inst.ref)

    await restarted.destroy(inst.ref, op)
    assert.equal(pidAlive(pidOf(inst.ref)), false)
    assert.equal(
      (await provider.describe([inst.ref], op)).get(inst.ref)?.state,
      'terminated',
      'the old object sees it too',
    )

    // A provider of another pool on the same directory sees none of it.
    const other = new LocalProvider({ poolId: 'another-pool', dataDir, settings: {}, log })
    assert.deepEqual(await other.list(op), [])
    assert.equal((await other.describe([inst.ref], op)).size, 0)
  })

  it('lets the server process exit while the instance runs on; a later server finds and destroys it', async () => {
    const id = newInstanceId()
    const fixture = join(import.meta.dirname, 'fixtures', 'create-and-exit.ts')
    const server = spawn(process.execPath, ['--import', 'tsx', fixture, dataDir, POOL, id], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    server.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    const code = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => {
        server.kill('SIGKILL')
        resolve(-1)
      }, 20_000)
      server.once('exit', (c) => {
        clearTimeout(t)
        resolve(c)
      })
    })
    const inst = out ? (JSON.parse(out) as ProviderInstance) : null
    assert.equal(code, 0, 'the "server" exited by itself, not held open by its child')
    assert.ok(inst)
    assert.equal(pidAlive(pidOf(inst.ref)), true, 'the instance outlived the server')
    await waitFor(
      'the orphaned demo app to answer',
      async () => (await probeHttp(inst.address!, '/healthz', { timeoutMs: 1000 })).ok,
    )
    const listed = (await provider.list(op)).find((i) => i.instanceId === id)
    assert.equal(listed?.state, 'running')
    await provider.destroy(inst.ref, op)
    await waitFor('the process to be gone', () => !pidAlive(pidOf(inst.ref)))
  })

  it('a pid whose start time differs is not ours: reported terminated and never signalled', async () => {
    // A process this test starts itself, outside the provider, standing in for a reused pid.
    const { pid, startTime } = startStranger()
    strangers.add(pid)
    const rec = foreignRecord(pid, '1') // not the stranger's start time
    const id = rec.instanceId
    plantRecord(dataDir, rec)
    const listed = (await provider.list(op)).find((i) => i.instanceId === id)
    assert.equal(listed?.state, 'terminated')
    assert.equal(listed?.ref, `${pid}:1`)
    await provider.destroy(`${pid}:1`, op)
    assert.equal(pidAlive(pid), true, 'the stranger was not killed')
    // A ref without a record is never signalled either, even with the right start time.
    await provider.destroy(`${pid}:${startTime}`, op)
    assert.equal(pidAlive(pid), true, 'no record, no signal')
    assert.equal((await provider.describe([`${pid}:${startTime}`], op)).size, 0)
  })

  it('reports a process that exited by itself as terminated, with the reason and the last log line', async () => {
    const s = spec(shTemplate('echo "cannot open config file"; exit 3'))
    const inst = await create(provider, s)
    const found = await waitFor('the exit to be noticed', async () => {
      const d = (await provider.describe([inst.ref], op)).get(inst.ref)
      return d?.state === 'terminated' && d.message?.includes('code 3') ? d : null
    })
    assert.match(found.message!, /exited with code 3: cannot open config file/)
    // A re-create replaces the dead process under the same instanceId.
    const again = await create(provider, { ...s, template: shTemplate('exec sleep 1000') })
    assert.notEqual(again.ref, inst.ref)
    assert.equal(again.state, 'running')
    await provider.destroy(again.ref, op)
  })

  it('creates 20 demo apps at once on distinct ports; all answer; all are destroyed', async () => {
    const t0 = Date.now()
    const insts = await Promise.all(Array.from({ length: 20 }, () => create(provider, spec(makeLocalDemoTemplate()))))
    const created = Date.now() - t0
    assert.equal(new Set(insts.map((i) => i.address)).size, 20, 'distinct ports')
    await Promise.all(
      insts.map((i) =>
        waitFor(
          `demo app ${i.instanceId}`,
          async () => (await probeHttp(i.address!, '/healthz', { timeoutMs: 1000 })).ok,
          20_000,
        ),
      ),
    )
    const ready = Date.now() - t0
    const t1 = Date.now()
    await Promise.all(insts.map((i) => provider.destroy(i.ref, op)))
    const destroyed = Date.now() - t1
    for (const i of insts) assert.equal(pidAlive(pidOf(i.ref)), false)
    // Numbers for the report, not assertions.
    console.log(`local: 20 demo apps created in ${created} ms, all ready in ${ready} ms, destroyed in ${destroyed} ms`)
  })

  it('two provider objects (two server processes) creating one instanceId at once start one process', async () => {
    const other = new LocalProvider({ poolId: POOL, dataDir, settings: {}, log })
    const s = spec(shTemplate('exec sleep 1000'))
    const [a, b] = await Promise.all([create(provider, s), create(other, s)])
    assert.equal(a.ref, b.ref)
    const sleepers = (await provider.list(op)).filter((i) => i.instanceId === s.id && i.state === 'running')
    assert.equal(sleepers.length, 1)
    await provider.destroy(a.ref, op)
  })

  it('takes over a create lock left by a server that died', async () => {
    const dead = spawn('true', [], { stdio: 'ignore' })
    const deadPid = await new Promise<number>((r) => dead.once('exit', () => r(dead.pid!)))
    const s = spec(shTemplate('exec sleep 1000'))
    const dir = join(dataDir, 'instances', s.id)
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, 'create.lock'), `${deadPid}:1`)
    const t0 = Date.now()
    const inst = await create(provider, s)
    assert.ok(Date.now() - t0 < 2000)
    assert.equal(inst.state, 'running')
    assert.equal(existsSync(join(dir, 'create.lock')), false, 'released after create')
    await provider.destroy(inst.ref, op)
  })

  it('validateTemplate explains a missing program or bad settings', async () => {
    assert.deepEqual(provider.validateTemplate(makeLocalDemoTemplate()), [])
    assert.deepEqual(provider.validateTemplate(shTemplate('true')), [])
    const missing = provider.validateTemplate(
      makeTemplate({ provider: 'local', settings: { command: ['no-such-program-xyz', '--flag'] } }),
    )
    assert.equal(missing.length, 1)
    assert.match(missing[0]!, /"no-such-program-xyz" was not found on PATH/)
    const notExec = join(dataDir, 'not-executable.sh')
    writeFileSync(notExec, '#!/bin/sh\n')
    chmodSync(notExec, 0o644)
    assert.match(
      provider.validateTemplate(makeTemplate({ provider: 'local', settings: { command: [notExec] } }))[0]!,
      /does not exist or is not executable/,
    )
    const noCommand = provider.validateTemplate(makeTemplate({ provider: 'local', settings: {} }))
    assert.ok(
      noCommand.some((p) => p.startsWith('local.command')),
      noCommand.join('; '),
    )
    const extra = provider.validateTemplate(
      makeTemplate({ provider: 'local', settings: { command: ['sh'], stopGrace: 'soon', typo: 1 } }),
    )
    assert.ok(extra.length >= 1, extra.join('; '))
    assert.match(
      provider.validateTemplate(
        makeTemplate({ provider: 'local', settings: { command: ['sh'], stopGrace: 'soon' } }),
      )[0]!,
      /stopGrace/,
    )
  })

  it('refuses an instance id that is not one of ours before touching the file system', async () => {
    const bad = { ...spec(makeLocalDemoTemplate()), id: '../../etc' }
    await assert.rejects(
      provider.create(bad, op),
      (err: unknown) => err instanceof ProviderError && /invalid instance id/.test(err.message),
    )
    assert.equal(existsSync(join(dataDir, 'etc')), false)
  })

  it('reports a program that cannot be started as a ProviderError', async () => {
    const t = makeTemplate({ provider: 'local', settings: { command: ['no-such-program-xyz'] } })
    await assert.rejects(
      provider.create(spec(t), op),
      (err: unknown) => err instanceof ProviderError && /ENOENT/.test(err.message),
    )
  })

  it("a session killed behind the provider's back: list() removes its namespace and veth and gives its slot back", async (t) => {
    if (provider.isolation().sessionsReachLoopback) return t.skip('sessions have no network namespace here (not root)')
    const s = spec(shTemplate('exec sleep 1000'))
    const inst = await create(provider, s)
    const netns = `sp${provider.scope}-${record(s.id).slot}`
    assert.ok(existsSync(`/run/netns/${netns}`), 'the session runs in its own namespace')
    process.kill(-pidOf(inst.ref), 'SIGKILL')
    await waitFor('the session to be gone', () => pidsInGroup(pidOf(inst.ref)).length === 0)
    const listed = (await provider.list(op)).find((i) => i.instanceId === s.id)
    assert.equal(listed?.state, 'terminated')
    assert.deepEqual(
      localLeftovers(provider.scope).filter((l) => !l.startsWith('nft')),
      [],
      'no namespace, veth or slot claim of the session is left',
    )
  })

  it('removes terminated instance directories after keepTerminated', async () => {
    const pruning = new LocalProvider({ poolId: POOL, dataDir, settings: { keepTerminated: '0ms' }, log })
    await pruning.init(op)
    const s = spec(shTemplate('exec sleep 1000'))
    const inst = await create(pruning, s)
    await pruning.destroy(inst.ref, op)
    await waitFor('terminatedAt to be in the past', () => Date.now() > record(s.id).terminatedAt!)
    const listed = await pruning.list(op)
    assert.equal(
      listed.find((i) => i.instanceId === s.id),
      undefined,
    )
    assert.equal(existsSync(join(dataDir, 'instances', s.id)), false)
  })
})

describe('local provider: a server killed between spawn and record (issue 9, item 3)', () => {
  let dataDir: string
  let provider: LocalProvider
  const started = new Set<number>()

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'studiopool-local-mid-'))
    provider = new LocalProvider({ poolId: POOL, dataDir, settings: {}, log })
    await provider.init(op)
  })
  after(() => {
    endSessionsUnder(dataDir, { pools: [POOL], dropFirewall: true })
    killAll(started)
    rmSync(dataDir, { recursive: true, force: true })
    rmSync(`${dataDir}-sessions`, { recursive: true, force: true })
    assert.deepEqual(localLeftovers(provider.scope), [], 'the tests left nothing of their scope on the host')
  })

  /** What a server leaves when it dies right after spawn(): a session process with its marker and no record. */
  function unrecordedSession(id: string): number {
    const child = spawn('sleep', ['1000'], {
      detached: true,
      stdio: 'ignore',
      env: {
        PATH: process.env.PATH ?? '',
        STUDIOPOOL_POOL: POOL,
        STUDIOPOOL_SCOPE: provider.scope,
        STUDIOPOOL_INSTANCE_ID: id,
        STUDIOPOOL_TEMPLATE: 'sh',
      },
    })
    child.unref()
    started.add(child.pid!)
    return child.pid!
  }

  it('list() finds the process by its marker, and destroy() of that ref ends it', async () => {
    const id = newInstanceId()
    const pid = unrecordedSession(id)
    const listed = await waitFor('the unrecorded process to be listed', async () =>
      (await provider.list(op)).find((i) => i.instanceId === id),
    )
    assert.equal(listed.state, 'running')
    assert.equal(pidOf(listed.ref), pid)
    await provider.destroy(listed.ref, op)
    await waitFor('the process to be gone', () => !pidAlive(pid))
  })

  it('create() for that instance ends the unrecorded process and starts exactly one', async () => {
    const id = newInstanceId()
    const orphan = unrecordedSession(id)
    const t = makeTemplate({
      name: 'sh',
      provider: 'local',
      settings: { command: ['sh', '-c', 'exec sleep 1000'], stopGrace: 2000 },
    })
    const inst = await provider.create(
      {
        id,
        poolId: POOL,
        template: t,
        basePath: `/s/${id}/`,
        labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'sh' },
        progressUrl: 'http://127.0.0.1:9/',
        progressToken: 'x',
        appToken: 'x',
        ownerId: null,
        sessionUrl: 'http://127.0.0.1:9/',
      },
      op,
    )
    started.add(pidOf(inst.ref))
    assert.equal(pidAlive(orphan), false, 'the process without a record is gone')
    const mine = (await provider.list(op)).filter((i) => i.instanceId === id && i.state === 'running')
    assert.deepEqual(
      mine.map((i) => i.ref),
      [inst.ref],
      'one process for the instance, the recorded one',
    )
    await provider.destroy(inst.ref, op)
  })

  it("a record naming a process without the instance's marker never gets it signalled", async () => {
    // A forged (or stale) record pointing at a live process that is not this instance's.
    const { pid, startTime } = startStranger()
    started.add(pid)
    plantRecord(dataDir, foreignRecord(pid, startTime))
    await provider.destroy(`${pid}:${startTime}`, op)
    assert.equal(pidAlive(pid), true, 'the process named by the forged record was not killed')
  })
})
