/**
 * Issue 9, item 7: owners survive the loss of the database. Claims record the owner in the
 * provider's labels (relabel); `studiopool recover` rebuilds instances, owners and open
 * assignments from them into an empty store, and refuses a non-empty one unless forced.
 * The fake provider (a shared in-memory cloud stands for the provider that outlives the store)
 * and the ec2 provider on aws-sdk-client-mock, both stores; the CLI as a real process.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { loadConfig } from '../../src/config/load.js'
import { AppError } from '../../src/domain/errors.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { recoverFromProviders } from '../../src/pool/recover.js'
import { createEc2Provider } from '../../src/providers/ec2/index.js'
import { FakeCloud, FakeProvider } from '../../src/providers/fake/index.js'
import {
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
} from '../../src/providers/provider.js'
import { createStoreFromUrl } from '../../src/store/sql-store.js'
import { waitFor } from '../helpers/wait.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { BIN } from '../helpers/server-process.js'
import { appServer, makeHarness } from '../pool/harness.js'
import { FakeEc2 } from '../providers/ec2-fake-aws.js'

const app = await appServer()
after(() => app.close())
const log = pino({ level: 'silent' })
const tmp = mkdtempSync(join(tmpdir(), 'sp-recover-'))
after(() => rmSync(tmp, { recursive: true, force: true }))

const YAML = `
pool: { id: rec, maxInstances: 10 }
templates:
  demo: { provider: fake, minFree: 2, maxInstances: 10, healthPath: / }
`

for (const kind of STORE_KINDS) {
  describe(`studiopool recover on ${kind.name}`, () => {
    test('warm claims and cold starts put the owner in the labels; recover rebuilds instances, owners and open assignments into an empty store, and the pool serves them', async () => {
      const cloudName = `recover-${kind.name}-${newInstanceId()}`
      const cloud = FakeCloud.named(cloudName)
      const config = loadConfig({ text: YAML, env: {}, cwd: tmp })
      const providerA = new FakeProvider({ poolId: 'rec', settings: { address: app.url } }, { cloud })
      // Store pool ids of this run's own: the Postgres advisory-lock keys derive from them and are database-wide.
      const storePool = `rec-${newInstanceId().slice(0, 10)}`
      const a = makeHarness(await kind.make({ poolId: storePool }), YAML, { appUrl: app.url, provider: providerA })
      let warmUser: string
      let coldUser: string
      const owners = new Map<string, string>()
      try {
        await a.pool.topUp()
        await waitFor(
          'two warm instances',
          async () => (await a.store.listInstances({ states: ['ready'], assigned: false })).length === 2,
        )
        const w = await a.pool.request({ userId: 'warm-user', keyName: 'arena' })
        assert.equal(w.outcome, 'warm')
        // Fill the warm pool's replacement too, then a cold start beyond it.
        await a.pool.drain()
        const w2 = await a.pool.request({ userId: 'second', keyName: 'arena' })
        const w3 = await a.pool.request({ userId: 'third', keyName: 'arena' })
        const c = await a.pool.request({ userId: 'cold-user', keyName: 'portal' })
        for (const r of [w, w2, w3, c]) owners.set(r.instance.id, r.instance.ownerId!)
        warmUser = w.instance.id
        coldUser = c.instance.id
        await a.pool.drain()
        await waitFor(
          'the warm claim relabelled',
          () =>
            cloud.resources.get((providerA.instances().find((r) => r.instanceId === warmUser) ?? { ref: '' }).ref)
              ?.labels[LABEL_OWNER] === 'warm-user',
        )
        for (const [id, owner] of owners)
          assert.equal(
            providerA.instances().find((r) => r.instanceId === id && r.state !== 'terminated')?.labels[LABEL_OWNER],
            owner,
            `owner label of ${id}`,
          )
      } finally {
        await a.close() // the store is "lost"; the provider's resources stay
      }

      const store = await kind.make({ poolId: storePool })
      const providerB = new FakeProvider({ poolId: 'rec', settings: { address: app.url } }, { cloud })
      const report = await recoverFromProviders({ config, store, providers: new Map([['fake', providerB]]), log })
      const live = providerB.instances().filter((r) => r.state !== 'terminated')
      assert.equal(report.instances.length, live.length, JSON.stringify(report.skipped))
      assert.equal(report.assignments, owners.size)
      for (const [id, owner] of owners) {
        const row = (await store.getInstance(id))!
        assert.equal(row.ownerId, owner)
        assert.equal(row.state, 'starting')
        const hist = await store.listHistory({ instanceId: id })
        assert.equal(hist.length, 1)
        assert.equal(hist[0]!.endedAt, null, 'the assignment is open')
        assert.equal(hist[0]!.keyName, id === coldUser ? 'portal' : 'arena')
      }
      assert.equal(
        (await store.listInstances({ assigned: false })).length,
        live.length - owners.size,
        'the free warm instances come back free',
      )

      // Not again into a store that holds data, unless forced; forced, nothing is duplicated.
      await assert.rejects(
        recoverFromProviders({ config, store, providers: new Map([['fake', providerB]]), log }),
        (e: unknown) => e instanceof AppError && e.code === 'CONFLICT',
      )
      const again = await recoverFromProviders({
        config,
        store,
        providers: new Map([['fake', providerB]]),
        log,
        force: true,
      })
      assert.equal(again.instances.length, 0)
      assert.ok(again.skipped.every((s) => s.reason === 'already in the store' || s.reason === 'terminated'))

      // The next server: the worker finds every resource, reaps none, and the owners get their sessions back.
      const b = makeHarness(store, YAML, { appUrl: app.url, provider: providerB })
      try {
        await b.worker.runOnce()
        await waitFor(
          'the recovered instances to be ready',
          async () => (await store.listInstances({ states: ['ready'] })).length === live.length,
        )
        // The same requester as before (the requester is part of a session's identity, issue 8).
        const back = await b.pool.request({ userId: 'warm-user', keyName: 'arena' })
        assert.equal(back.outcome, 'existing')
        assert.equal(back.instance.id, warmUser)
        assert.equal((await b.pool.request({ userId: 'cold-user', keyName: 'portal' })).instance.id, coldUser)
        await b.worker.runOnce()
        assert.equal(
          providerB.instances().filter((r) => r.state !== 'terminated').length,
          live.length,
          'nothing was reaped as an orphan',
        )
      } finally {
        await b.close()
        FakeCloud.drop(cloudName)
      }
    })

    test('ec2 (aws-sdk-client-mock): owner tags from CreateTags come back as owners and open assignments', async () => {
      const aws = new FakeEc2()
      const ec2Yaml = `
pool: { id: rec-ec2 }
providers: { ec2: { region: eu-central-1 } }
templates:
  rstudio: { provider: ec2, port: 8787, ec2: { imageId: ami-0130bec6e5047f596, instanceType: t2.micro, securityGroupIds: [sg-1234aa12a123ab123] } }
`
      const config = loadConfig({ text: ec2Yaml, env: {}, cwd: tmp })
      const t = config.templates[0]!
      const provider = createEc2Provider(
        { poolId: 'rec-ec2', dataDir: tmp, settings: { region: 'eu-central-1' }, log },
        { sleep: async () => {}, random: () => 0 },
      )
      try {
        await provider.init({ log })
        assert.deepEqual(provider.validateTemplate(t), [])
        const spec = (id: string, labels: Record<string, string> = {}): InstanceSpec => ({
          id,
          poolId: 'rec-ec2',
          template: t,
          basePath: `/s/${id}/`,
          labels: { [LABEL_POOL]: 'rec-ec2', [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: t.name, ...labels },
          progressUrl: `https://pool.example.org/api/v1/instances/${id}/progress`,
          progressToken: 'ptok',
          appToken: 'atok',
          ownerId: labels[LABEL_OWNER] ?? null,
          sessionUrl: `https://pool.example.org/s/${id}/`,
        })
        const cold = newInstanceId()
        const warm = newInstanceId()
        const free = newInstanceId()
        await provider.create(
          spec(cold, {
            [LABEL_OWNER]: 'ann',
            'studiopool:assigned-at': '1700000000000',
            'studiopool:requester': 'arena',
          }),
          { log },
        )
        const w = await provider.create(spec(warm), { log })
        await provider.create(spec(free), { log })
        // A warm claim: the pool relabels in the background.
        await provider.relabel(
          w.ref,
          { [LABEL_INSTANCE]: warm, [LABEL_OWNER]: 'bob', 'studiopool:assigned-at': '1700000001000' },
          { log },
        )
        const store = await kind.make({ poolId: `rec-ec2-${newInstanceId().slice(0, 10)}` })
        const report = await recoverFromProviders({ config, store, providers: new Map([['ec2', provider]]), log })
        assert.equal(report.instances.length, 3)
        assert.equal(report.assignments, 2)
        assert.equal((await store.getInstance(cold))!.ownerId, 'ann')
        assert.equal((await store.getInstance(warm))!.ownerId, 'bob')
        assert.equal((await store.getInstance(free))!.ownerId, null)
        const [ann] = await store.listHistory({ userId: 'ann' })
        assert.equal(ann!.startedAt, 1_700_000_000_000)
        assert.equal(ann!.keyName, 'arena')
        assert.equal((await store.listHistory({ userId: 'bob' }))[0]!.endedAt, null)
      } finally {
        await provider.close()
        aws.restore()
      }
    })

    test('the CLI, a real process: reports what it found; refuses a non-empty store with exit 2', async () => {
      const url = await kind.freshUrl()
      const dir = mkdtempSync(join(tmp, 'cli-'))
      const storeYaml = url.startsWith('sqlite:')
        ? `store: { driver: sqlite, path: ${JSON.stringify(url.slice(7))} }`
        : `store: { driver: postgres, url: ${JSON.stringify(url)} }`
      const file = join(dir, 'studiopool.yaml')
      writeFileSync(file, `${storeYaml}\npool: { id: cli }\ntemplates:\n  demo: { provider: fake }\n`)
      const run = async (...args: string[]) => {
        const child = spawn(process.execPath, [BIN, 'recover', '--config', file, ...args], {
          cwd: dir,
          env: { PATH: process.env.PATH ?? '', HOME: dir },
          stdio: ['ignore', 'pipe', 'pipe'],
        })
        let out = ''
        child.stdout.on('data', (d: Buffer) => (out += d.toString()))
        child.stderr.on('data', (d: Buffer) => (out += d.toString()))
        const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
        const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
        clearTimeout(timer)
        return { code, out }
      }
      const empty = await run('--json')
      assert.equal(empty.code, 0, empty.out)
      const report = JSON.parse(empty.out)
      assert.equal(report.listed, 0)
      assert.deepEqual(report.instances, [])
      const s = await createStoreFromUrl(url, { poolId: 'cli' })
      const now = Date.now()
      await s.insertInstance({
        id: newInstanceId(),
        template: 'demo',
        state: 'ready',
        ownerId: null,
        keyName: null,
        createdAt: now,
        updatedAt: now,
      })
      await s.close()
      const refused = await run()
      assert.equal(refused.code, 2, refused.out)
      assert.match(refused.out, /not empty.*--force/)
      const forced = await run('--force')
      assert.equal(forced.code, 0, forced.out)
      assert.match(forced.out, /0 resources listed; 0 instances recovered/)
    })
  })
}
