import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pino from 'pino'
import { ProviderError } from '../../src/domain/errors.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { loadProvider } from '../../src/providers/registry.js'
import { FakeCloud, FakeProvider } from '../../src/providers/fake/index.js'
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE, type InstanceSpec } from '../../src/providers/provider.js'
import { makeTemplate } from '../helpers/template.js'

const log = pino({ level: 'silent' })
const op = { log }
const POOL = 'fake-pool'

function spec(id = newInstanceId(), settings: Record<string, unknown> = {}): InstanceSpec {
  const template = makeTemplate({ settings })
  return {
    id,
    poolId: POOL,
    template,
    basePath: `/s/${id}/`,
    labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: template.name },
    progressUrl: 'http://127.0.0.1:9/progress',
    progressToken: 't',
    appToken: 'test-app-token',
    ownerId: null,
    sessionUrl: 'http://127.0.0.1:1/s/x/',
  }
}

describe('fake provider', () => {
  it('is what the registry loads for "fake"', async () => {
    const p = await loadProvider('fake', { poolId: POOL, dataDir: '/nonexistent', settings: {}, log })
    assert.ok(p instanceof FakeProvider)
  })

  it('counts calls per method; describe is one call for many refs', async () => {
    const p = new FakeProvider({ poolId: POOL, settings: {} })
    const a = await p.create(spec(), op)
    const b = await p.create(spec(), op)
    await p.describe([a.ref, b.ref], op)
    await p.list(op)
    await p.destroy(a.ref, op)
    assert.deepEqual(p.calls, { create: 2, describe: 1, list: 1, destroy: 1, stop: 0, start: 0, relabel: 0 })
    p.resetCalls()
    assert.equal(p.calls.create, 0)
  })

  it('fails the next create(s) on demand, and through the failCreate hook', async () => {
    const p = new FakeProvider({ poolId: POOL, settings: {} })
    p.failNextCreate('capacity', 2)
    await assert.rejects(
      p.create(spec(), op),
      (e: unknown) => e instanceof ProviderError && e.message === 'capacity' && e.retryable,
    )
    await assert.rejects(p.create(spec(), op), /capacity/)
    await p.create(spec(), op)
    p.failCreate = (s) => (s.id.startsWith('a') ? new ProviderError('fake', 'no a-ids') : undefined)
    await assert.rejects(p.create(spec(`a${newInstanceId().slice(1)}`), op), /no a-ids/)
    await p.create(spec(`b${newInstanceId().slice(1)}`), op)
    p.failNext('list', new Error('list down'))
    await assert.rejects(p.list(op), /list down/)
    assert.equal((await p.list(op)).length, 2)
  })

  it('vanishes an instance as a spot reclaim would, and re-creates it under the same id', async () => {
    const p = new FakeProvider({ poolId: POOL, settings: {} })
    const s = spec()
    const a = await p.create(s, op)
    assert.equal(p.vanish(s.id), true)
    assert.equal((await p.describe([a.ref], op)).size, 0)
    assert.equal((await p.list(op)).length, 0)
    const b = await p.create(s, op)
    assert.notEqual(b.ref, a.ref)
    assert.equal(p.vanish(b.ref, 'terminated'), true)
    assert.equal((await p.describe([b.ref], op)).get(b.ref)?.state, 'terminated')
    assert.equal(p.vanish('nothing'), false)
  })

  it('adds unknown tagged resources (orphans) that list shows', async () => {
    const p = new FakeProvider({ poolId: POOL, settings: {} })
    const orphan = p.addUnknown({ template: 'demo' })
    const listed = await p.list(op)
    assert.equal(listed.length, 1)
    assert.equal(listed[0]!.ref, orphan.ref)
    assert.equal(listed[0]!.labels[LABEL_POOL], POOL)
    assert.equal(listed[0]!.state, 'running')
  })

  it('is pending for startDelayMs, with progress, then running', async () => {
    let now = 1_000_000
    const p = new FakeProvider(
      { poolId: POOL, settings: { startDelayMs: 1000, address: 'http://127.0.0.1:5555' } },
      { now: () => now },
    )
    const a = await p.create(spec(), op)
    assert.equal(a.state, 'pending')
    assert.equal(a.address, 'http://127.0.0.1:5555')
    now += 500
    const half = (await p.describe([a.ref], op)).get(a.ref)!
    assert.equal(half.state, 'pending')
    assert.equal(half.progress, 50)
    now += 500
    assert.equal((await p.describe([a.ref], op)).get(a.ref)!.state, 'running')
    // A template's own setting wins over the provider's.
    const b = await p.create(spec(newInstanceId(), { startDelayMs: 0 }), op)
    assert.equal(b.state, 'running')
  })

  it('gives a fake.invalid address by default', async () => {
    const p = new FakeProvider({ poolId: POOL, settings: {} })
    const s = spec()
    assert.equal((await p.create(s, op)).address, `http://fake.invalid/${s.id}`)
  })

  it('shares a named cloud between provider objects (a server restart in one process)', async () => {
    const name = `cloud-${newInstanceId()}`
    try {
      const first = new FakeProvider({ poolId: POOL, settings: { cloud: name } })
      const a = await first.create(spec(), op)
      const second = new FakeProvider({ poolId: POOL, settings: { cloud: name } })
      assert.deepEqual(
        (await second.list(op)).map((i) => i.ref),
        [a.ref],
      )
      const otherPool = new FakeProvider({ poolId: 'other', settings: { cloud: name } })
      assert.deepEqual(await otherPool.list(op), [])
      await otherPool.destroy(a.ref, op)
      assert.equal((await second.describe([a.ref], op)).get(a.ref)?.state, 'running', 'another pool cannot destroy it')
    } finally {
      FakeCloud.drop(name)
    }
  })

  it('stops and starts, or offers neither when configured so', async () => {
    const p = new FakeProvider({ poolId: POOL, settings: {} })
    const a = await p.create(spec(), op)
    await p.stop!(a.ref, op)
    assert.equal((await p.describe([a.ref], op)).get(a.ref)?.state, 'stopped')
    await p.start!(a.ref, op)
    assert.equal((await p.describe([a.ref], op)).get(a.ref)?.state, 'running')
    await p.destroy(a.ref, op)
    await assert.rejects(p.start!(a.ref, op), ProviderError)
    const noSuspend = new FakeProvider({ poolId: POOL, settings: { supportsSuspend: false } })
    assert.equal(noSuspend.capabilities.supportsSuspend, false)
    assert.equal(noSuspend.stop, undefined)
  })

  it('validates template settings', () => {
    const p = new FakeProvider({ poolId: POOL, settings: {} })
    assert.deepEqual(p.validateTemplate(makeTemplate({ settings: { startDelayMs: 10, address: 'http://x' } })), [])
    assert.deepEqual(p.validateTemplate(makeTemplate({ settings: { startDelayMs: -1 } })), [
      'settings.startDelayMs: must be a number ≥ 0',
    ])
    assert.deepEqual(p.validateTemplate(makeTemplate({ settings: { nope: 1 } })), [
      'settings.nope: unknown setting of the fake provider',
    ])
    assert.deepEqual(p.validateTemplate(makeTemplate({ settings: { validationError: 'broken on purpose' } })), [
      'broken on purpose',
    ])
  })
})
