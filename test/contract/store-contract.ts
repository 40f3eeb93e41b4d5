/**
 * The one behavioural suite for Store implementations (src/store/store.ts). Each backend's test
 * file calls `storeContract(name, makeStore)`; makeStore must return a fresh, empty, migrated store
 * every call (the suite closes each one it makes).
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { newInstanceId } from '../../src/domain/ids.js'
import { ConflictError } from '../../src/domain/errors.js'
import type { Instance, InstanceState } from '../../src/domain/instance.js'
import { LiveInstanceExistsError } from '../../src/store/store.js'
import type { NewInstance, Store } from '../../src/store/store.js'

export interface StoreContractOptions {
  /** When set, the whole suite is skipped with this reason. */
  readonly skip?: string
}

export function storeContract(name: string, makeStore: () => Promise<Store>, opts: StoreContractOptions = {}): void {
  /** Runs fn with a fresh store and always closes it. */
  async function withStore<T>(fn: (s: Store) => Promise<T>): Promise<T> {
    const s = await makeStore()
    try {
      return await fn(s)
    } finally {
      await s.close()
    }
  }

  function row(over: Partial<NewInstance> = {}): NewInstance {
    return { id: newInstanceId(), template: 'rstudio', state: 'ready', ownerId: null, keyName: null, ...over }
  }

  describe(`store contract: ${name}`, { skip: opts.skip ?? false }, () => {
    test('ping and migrate are idempotent', () =>
      withStore(async (s) => {
        await s.ping()
        await s.migrate()
        await s.migrate()
        await s.ping()
        assert.ok(s.dialect === 'sqlite' || s.dialect === 'postgres')
      }))

    test('instance round trip with every field set', () =>
      withStore(async (s) => {
        const full: Instance = {
          id: newInstanceId(),
          template: 'jupyter',
          state: 'starting',
          ownerId: 'user-ü 1',
          keyName: 'portal',
          providerRef: 'i-0abc',
          address: 'http://127.0.0.1:41234',
          progress: 42,
          progressMessage: 'booting "kernel" ✓',
          progressTokenHash: 'a'.repeat(64),
          failureReason: 'none yet',
          generation: 3,
          createdAt: 1_700_000_000_001,
          updatedAt: 1_700_000_000_002,
          startedAt: 1_699_999_999_999,
          readyAt: 1_700_000_000_003,
          assignedAt: 1_700_000_000_004,
          lastActivityAt: 1_700_000_000_005,
          endedAt: 1_700_000_000_006,
          endReason: 'idle',
          tags: { course: 'stats-101', 'with space': 'x"y' },
        }
        const inserted = await s.insertInstance(full)
        assert.deepEqual(inserted, full)
        assert.deepEqual(await s.getInstance(full.id), full)
        for (const k of [
          'createdAt',
          'updatedAt',
          'startedAt',
          'readyAt',
          'assignedAt',
          'lastActivityAt',
          'endedAt',
          'progress',
          'generation',
        ] as const) {
          assert.equal(typeof inserted[k], 'number', `${k} is a number`)
        }
      }))

    test('instance defaults and nulls', () =>
      withStore(async (s) => {
        const before = Date.now()
        const r = await s.insertInstance(row({ state: 'queued', ownerId: 'u1', keyName: null }))
        assert.equal(r.providerRef, null)
        assert.equal(r.address, null)
        assert.equal(r.progress, 0)
        assert.equal(r.progressMessage, '')
        assert.equal(r.progressTokenHash, null)
        assert.equal(r.failureReason, null)
        assert.equal(r.generation, 0)
        assert.ok(r.createdAt >= before && r.createdAt <= Date.now() + 1)
        assert.equal(r.updatedAt, r.createdAt)
        assert.equal(r.startedAt, null)
        assert.equal(r.readyAt, null)
        assert.equal(r.assignedAt, null)
        assert.equal(r.lastActivityAt, null)
        assert.equal(r.endedAt, null)
        assert.equal(r.endReason, null)
        assert.deepEqual(r.tags, {})
        assert.deepEqual(await s.getInstance(r.id), r)
        assert.equal(await s.getInstance(newInstanceId()), undefined)
      }))

    test('insert with an existing id is a ConflictError', () =>
      withStore(async (s) => {
        const r = await s.insertInstance(row())
        await assert.rejects(s.insertInstance(row({ id: r.id })), ConflictError)
      }))

    test('updateInstance patches fields, nulls and tags and sets updatedAt', () =>
      withStore(async (s) => {
        const r = await s.insertInstance(row({ address: 'http://x', providerRef: 'p', createdAt: 1000 }))
        const before = Date.now()
        const u = await s.updateInstance(r.id, { address: null, progress: 77, tags: { a: 'b' }, failureReason: 'boom' })
        assert.ok(u)
        assert.equal(u.address, null)
        assert.equal(u.providerRef, 'p')
        assert.equal(u.progress, 77)
        assert.equal(u.failureReason, 'boom')
        assert.deepEqual(u.tags, { a: 'b' })
        assert.equal(u.createdAt, 1000)
        assert.ok(u.updatedAt >= before)
        const u2 = await s.updateInstance(r.id, { updatedAt: 5 })
        assert.equal(u2?.updatedAt, 5)
        assert.deepEqual(await s.getInstance(r.id), u2)
        assert.equal(await s.updateInstance(newInstanceId(), { progress: 1 }), undefined)
      }))

    test('updateInstance is a compare-and-set on state, generation and owner', () =>
      withStore(async (s) => {
        const r = await s.insertInstance(row({ state: 'starting', generation: 2 }))
        assert.equal(await s.updateInstance(r.id, { state: 'ready' }, { states: ['provisioning'] }), undefined)
        assert.equal(await s.updateInstance(r.id, { state: 'ready' }, { states: [] }), undefined)
        assert.equal(await s.updateInstance(r.id, { state: 'ready' }, { generation: 1 }), undefined)
        assert.equal(await s.updateInstance(r.id, { state: 'ready' }, { ownerId: 'someone' }), undefined)
        assert.equal((await s.getInstance(r.id))?.state, 'starting')
        const ok = await s.updateInstance(
          r.id,
          { state: 'ready' },
          { states: ['provisioning', 'starting'], generation: 2, ownerId: null },
        )
        assert.equal(ok?.state, 'ready')
        const claimed = await s.updateInstance(r.id, { ownerId: 'u1' }, { ownerId: null })
        assert.equal(claimed?.ownerId, 'u1')
        assert.equal(await s.updateInstance(r.id, { ownerId: 'u2' }, { ownerId: null }), undefined)
        assert.equal((await s.updateInstance(r.id, { progress: 9 }, { ownerId: 'u1' }))?.progress, 9)
      }))

    test('one live instance per user and template (insert and update)', () =>
      withStore(async (s) => {
        const a = await s.insertInstance(row({ state: 'queued', ownerId: 'u1' }))
        for (const state of ['queued', 'provisioning', 'starting', 'ready', 'suspended'] as const) {
          await assert.rejects(s.insertInstance(row({ state, ownerId: 'u1' })), LiveInstanceExistsError, state)
        }
        // other template, other user, free, and ended instances are fine
        await s.insertInstance(row({ template: 'jupyter', state: 'ready', ownerId: 'u1' }))
        await s.insertInstance(row({ state: 'ready', ownerId: 'u2' }))
        const free = await s.insertInstance(row({ state: 'ready', ownerId: null }))
        await s.insertInstance(row({ state: 'ready', ownerId: null }))
        await s.insertInstance(row({ state: 'terminated', ownerId: 'u1' }))
        await s.insertInstance(row({ state: 'failed', ownerId: 'u1' }))
        await s.insertInstance(row({ state: 'stopping', ownerId: 'u1' }))
        // handing a free instance to u1 while a is live
        await assert.rejects(s.updateInstance(free.id, { ownerId: 'u1' }), LiveInstanceExistsError)
        assert.equal((await s.getInstance(free.id))?.ownerId, null)
        // once a ends, u1 may have a new one
        await s.updateInstance(a.id, { state: 'terminated' })
        assert.equal((await s.updateInstance(free.id, { ownerId: 'u1' }))?.ownerId, 'u1')
        // and reviving the ended one is refused
        await assert.rejects(s.updateInstance(a.id, { state: 'ready' }), LiveInstanceExistsError)
      }))

    test('listInstances filters and order', () =>
      withStore(async (s) => {
        const a = await s.insertInstance(row({ state: 'ready', createdAt: 3 }))
        const b = await s.insertInstance(row({ state: 'starting', ownerId: 'u1', createdAt: 1 }))
        const c = await s.insertInstance(row({ template: 'jupyter', state: 'ready', ownerId: 'u2', createdAt: 2 }))
        const ids = (xs: Instance[]) => xs.map((x) => x.id)
        assert.deepEqual(ids(await s.listInstances()), [b.id, c.id, a.id])
        assert.deepEqual(ids(await s.listInstances({ template: 'rstudio' })), [b.id, a.id])
        assert.deepEqual(ids(await s.listInstances({ states: ['ready'] })), [c.id, a.id])
        assert.deepEqual(ids(await s.listInstances({ states: [] })), [])
        assert.deepEqual(ids(await s.listInstances({ ownerId: 'u2' })), [c.id])
        assert.deepEqual(ids(await s.listInstances({ assigned: true })), [b.id, c.id])
        assert.deepEqual(ids(await s.listInstances({ assigned: false })), [a.id])
        assert.deepEqual(ids(await s.listInstances({ limit: 2 })), [b.id, c.id])
        assert.deepEqual(ids(await s.listInstances({ template: 'rstudio', states: ['ready'], assigned: false })), [
          a.id,
        ])
      }))

    test('findLive, listAssignedIds, countActive, countByState, deleteInstance', () =>
      withStore(async (s) => {
        const live = await s.insertInstance(row({ state: 'starting', ownerId: 'u1', keyName: 'portal' }))
        await s.insertInstance(row({ state: 'terminated', ownerId: 'u2', keyName: 'portal' }))
        const stopping = await s.insertInstance(row({ state: 'stopping', ownerId: 'u3' }))
        const susp = await s.insertInstance(row({ template: 'jupyter', state: 'suspended', ownerId: 'u1' }))
        await s.insertInstance(row({ state: 'ready' }))
        await s.insertInstance(row({ state: 'queued', ownerId: 'u4' }))
        const q = await s.listInstances({ ownerId: 'u4' })
        assert.equal((await s.findLive('u1', 'rstudio'))?.id, live.id)
        assert.equal((await s.findLive('u1', 'jupyter'))?.id, susp.id)
        assert.equal(await s.findLive('u2', 'rstudio'), undefined)
        assert.equal(await s.findLive('u3', 'rstudio'), undefined, 'stopping is not live')
        assert.deepEqual((await s.listAssignedIds()).sort(), [live.id, susp.id, q[0]!.id].sort())
        assert.equal(
          await s.countInstances({
            template: 'rstudio',
            assigned: true,
            states: ['starting', 'stopping', 'terminated'],
          }),
          3,
        )
        assert.equal(
          await s.countInstances({
            template: 'rstudio',
            assigned: true,
            states: ['starting', 'stopping', 'terminated'],
            limit: 2,
          }),
          2,
          'counts at most limit',
        )
        assert.equal(await s.countInstances({ assigned: false }), 1)
        assert.equal(await s.countInstances({ states: [] }), 0)
        assert.deepEqual(
          await s.listAssignedIds({ keyName: 'portal' }),
          [live.id],
          'only the live ones this key requested',
        )
        assert.deepEqual(await s.listAssignedIds({ keyName: 'other' }), [])
        // active: provisioning, starting, ready, stopping, suspended (not queued, not ended)
        assert.deepEqual(await s.countActive(), { total: 4, byTemplate: { rstudio: 3, jupyter: 1 } })
        const byState = await s.countByState()
        const get = (t: string, st: InstanceState) => byState.find((x) => x.template === t && x.state === st)?.count
        assert.equal(get('rstudio', 'starting'), 1)
        assert.equal(get('rstudio', 'terminated'), 1)
        assert.equal(get('rstudio', 'queued'), 1)
        assert.equal(get('jupyter', 'suspended'), 1)
        assert.equal(
          byState.reduce((n, x) => n + x.count, 0),
          6,
        )
        await s.deleteInstance(stopping.id)
        await s.deleteInstance(stopping.id) // idempotent
        assert.equal(await s.getInstance(stopping.id), undefined)
        assert.equal((await s.countActive()).total, 3)
      }))

    test('assignWarm takes the oldest free ready instance, opens its assignment and audits it', () =>
      withStore(async (s) => {
        const claim = (userId: string, keyName: string | null = null) => ({ template: 'rstudio', userId, keyName })
        assert.deepEqual(await s.assignWarm([claim('u1', 'k')], 100), [{}], 'nothing free')
        await s.insertInstance(row({ state: 'starting', createdAt: 1 }))
        await s.insertInstance(row({ template: 'jupyter', state: 'ready', createdAt: 1 }))
        await s.insertInstance(row({ state: 'ready', ownerId: 'other', createdAt: 1 }))
        const newer = await s.insertInstance(row({ state: 'ready', createdAt: 20 }))
        const older = await s.insertInstance(row({ state: 'ready', createdAt: 10 }))
        const [first] = await s.assignWarm([claim('u1', 'portal')], 500)
        const got = first?.assigned
        assert.equal(first?.existing, undefined)
        assert.equal(got?.id, older.id)
        assert.equal(got?.ownerId, 'u1')
        assert.equal(got?.keyName, 'portal')
        assert.equal(got?.assignedAt, 500)
        assert.equal(got?.lastActivityAt, 500)
        assert.equal(got?.updatedAt, 500)
        assert.equal(got?.state, 'ready')
        assert.deepEqual(await s.getInstance(older.id), got)
        const history = await s.listHistory({ userId: 'u1' })
        assert.deepEqual(
          history.map((a) => [a.instanceId, a.template, a.keyName, a.startedAt, a.endedAt]),
          [[older.id, 'rstudio', 'portal', 500, null]],
          'the assignment is open',
        )
        const audit = await s.listAudit({ instanceId: older.id })
        assert.deepEqual(
          audit.map((e) => [e.event, e.actor, e.at, e.detail]),
          [['assigned', 'portal', 500, { userId: 'u1', warm: true }]],
        )
        // The user's live instance comes back as existing; nothing else changes.
        assert.deepEqual(await s.assignWarm([claim('u1')], 600), [{ existing: got }])
        assert.equal((await s.getInstance(newer.id))?.ownerId, null)
        assert.equal((await s.listHistory({ userId: 'u1' })).length, 1)
        const [second] = await s.assignWarm([claim('u2')], 700)
        assert.equal(second?.assigned?.id, newer.id)
        assert.equal(second?.assigned?.keyName, null)
        assert.deepEqual(await s.assignWarm([claim('u3')], 800), [{}])
      }))

    test('assignWarm: each claim of a batch sees the ones before it', () =>
      withStore(async (s) => {
        const a = await s.insertInstance(row({ state: 'ready', createdAt: 1 }))
        const b = await s.insertInstance(row({ state: 'ready', createdAt: 2 }))
        const j = await s.insertInstance(row({ template: 'jupyter', state: 'ready', createdAt: 3 }))
        const c = (userId: string, template = 'rstudio') => ({ template, userId, keyName: 'k' })
        const out = await s.assignWarm([c('x'), c('x'), c('y'), c('z'), c('z', 'jupyter'), c('y')], 50)
        assert.equal(out[0]?.assigned?.id, a.id)
        assert.equal(out[1]?.existing?.id, a.id, 'the same user again gets the instance just assigned')
        assert.equal(out[2]?.assigned?.id, b.id)
        assert.deepEqual(out[3], {}, 'no free rstudio left')
        assert.equal(out[4]?.assigned?.id, j.id, 'another template still has one')
        assert.equal(out[5]?.existing?.id, b.id)
        assert.equal((await s.listHistory({})).length, 3, 'one assignment per claim that got an instance')
      }))

    test('claimWarm: claims made at once (one batch on either store) each see the ones before them', () =>
      withStore(async (s) => {
        const a = await s.insertInstance(row({ state: 'ready', createdAt: 1 }))
        const b = await s.insertInstance(row({ state: 'ready', createdAt: 2 }))
        const j = await s.insertInstance(row({ template: 'jupyter', state: 'ready', createdAt: 3 }))
        const c = (userId: string, template = 'rstudio') => ({ template, userId, keyName: 'k' })
        const claims = [c('x'), c('x'), c('y'), c('z'), c('z', 'jupyter'), c('y')]
        const out = await Promise.all(claims.map((cl, i) => s.claimWarm(cl, 50 + i)))
        assert.equal(out[0]?.assigned?.id, a.id)
        assert.equal(out[0]?.assigned?.assignedAt, 50, "each claim's own time")
        assert.equal(out[1]?.existing?.id, a.id, 'the same user again gets the instance just assigned')
        assert.equal(out[2]?.assigned?.id, b.id)
        assert.equal(out[2]?.assigned?.assignedAt, 52)
        assert.deepEqual(out[3], {}, 'no free rstudio left')
        assert.equal(out[4]?.assigned?.id, j.id, 'another template still has one')
        assert.equal(out[5]?.existing?.id, b.id)
        const history = await s.listHistory({})
        assert.deepEqual(
          history.map((h) => [h.userId, h.instanceId, h.startedAt]).sort(),
          [
            ['x', a.id, 50],
            ['y', b.id, 52],
            ['z', j.id, 54],
          ].sort(),
          'one assignment per claim that got an instance',
        )
        const audit = await s.listAudit({ instanceId: b.id })
        assert.deepEqual(
          audit.map((e) => [e.event, e.actor, e.at, e.detail]),
          [['assigned', 'k', 52, { userId: 'y', warm: true }]],
        )
      }))

    test("claimWarm: a user with a live instance gets it back from a batch, the batch's other claims are served", () =>
      withStore(async (s) => {
        await s.insertInstance(row({ state: 'ready', createdAt: 1 }))
        await s.insertInstance(row({ state: 'ready', createdAt: 2 }))
        await s.insertInstance(row({ template: 'rstudio', state: 'starting', ownerId: 'busy', createdAt: 3 }))
        const out = await Promise.allSettled([
          s.claimWarm({ template: 'rstudio', userId: 'free-1', keyName: null }, 10),
          s.claimWarm({ template: 'rstudio', userId: 'busy', keyName: null }, 11),
          s.claimWarm({ template: 'rstudio', userId: 'free-2', keyName: null }, 12),
        ])
        assert.ok(out.every((r) => r.status === 'fulfilled'))
        const [one, busy, two] = out.map((r) => (r.status === 'fulfilled' ? r.value : {}))
        assert.ok(one?.assigned && two?.assigned && one.assigned.id !== two.assigned.id)
        assert.equal(busy?.existing?.ownerId, 'busy', "the user's live instance, not a second one")
        assert.equal(busy?.existing?.state, 'starting')
      }))

    test('concurrency: 50 users claim 10 free instances at once through claimWarm', () =>
      withStore(async (s) => {
        await Promise.all(Array.from({ length: 10 }, (_, i) => s.insertInstance(row({ createdAt: i }))))
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            s.claimWarm({ template: 'rstudio', userId: `user-${i}`, keyName: null }, 1000 + i),
          ),
        )
        const claimed = results.flatMap((r) => (r.assigned ? [r.assigned] : []))
        assert.equal(claimed.length, 10)
        assert.equal(new Set(claimed.map((c) => c.id)).size, 10, 'each instance claimed once')
        assert.equal(new Set(claimed.map((c) => c.ownerId)).size, 10, 'each user at most once')
        assert.equal((await s.listHistory({})).length, 10, 'one assignment per claimed instance')
        assert.equal(await s.countInstances({ assigned: false }), 0)
      }))

    test('queuePosition and listQueued order oldest first per template', () =>
      withStore(async (s) => {
        const q2 = await s.insertInstance(row({ state: 'queued', ownerId: 'b', createdAt: 20 }))
        const q1 = await s.insertInstance(row({ state: 'queued', ownerId: 'a', createdAt: 10 }))
        const tieA = await s.insertInstance(row({ state: 'queued', ownerId: 'c', createdAt: 30 }))
        const tieB = await s.insertInstance(row({ state: 'queued', ownerId: 'd', createdAt: 30 }))
        const other = await s.insertInstance(row({ template: 'jupyter', state: 'queued', ownerId: 'a', createdAt: 5 }))
        const notQueued = await s.insertInstance(row({ state: 'ready', createdAt: 1 }))
        const list = await s.listQueued('rstudio')
        assert.deepEqual(
          list.slice(0, 2).map((x) => x.id),
          [q1.id, q2.id],
        )
        const ties = list.slice(2).map((x) => x.id)
        assert.deepEqual(new Set(ties), new Set([tieA.id, tieB.id]))
        for (const [i, inst] of list.entries()) assert.equal(await s.queuePosition(inst.id), i + 1)
        assert.equal(await s.queuePosition(other.id), 1)
        assert.equal(await s.queuePosition(notQueued.id), null)
        assert.equal(await s.queuePosition(newInstanceId()), null)
        assert.deepEqual(
          (await s.listQueued()).map((x) => x.id),
          [other.id, q1.id, q2.id, ...ties],
        )
        assert.deepEqual(
          (await s.listQueued('rstudio', 1)).map((x) => x.id),
          [q1.id],
        )
        // Keyset pages: after a row, the rest in the same order, ties by id.
        assert.deepEqual(
          (await s.listQueued('rstudio', 10, { createdAt: q1.createdAt, id: q1.id })).map((x) => x.id),
          [q2.id, ...ties],
        )
        const [firstTie] = ties
        assert.deepEqual(
          (await s.listQueued(undefined, 10, { createdAt: 30, id: firstTie! })).map((x) => x.id),
          ties.slice(1),
        )
        assert.deepEqual(await s.listQueued(undefined, 10, { createdAt: 30, id: ties.at(-1)! }), [])
        await s.updateInstance(q1.id, { state: 'provisioning' })
        assert.equal(await s.queuePosition(q2.id), 1)
      }))

    test('recordActivity keeps the maximum', () =>
      withStore(async (s) => {
        const a = await s.insertInstance(row({ lastActivityAt: 1000 }))
        const b = await s.insertInstance(row())
        await s.recordActivity([])
        await s.recordActivity([
          { id: a.id, at: 500 },
          { id: b.id, at: 700 },
          { id: b.id, at: 900 },
          { id: b.id, at: 800 },
          { id: newInstanceId(), at: 5 },
        ])
        assert.equal((await s.getInstance(a.id))?.lastActivityAt, 1000)
        assert.equal((await s.getInstance(b.id))?.lastActivityAt, 900)
        await s.recordActivity([{ id: a.id, at: 2000 }])
        assert.equal((await s.getInstance(a.id))?.lastActivityAt, 2000)
        // a large batch in one call
        const many = await Promise.all(Array.from({ length: 50 }, () => s.insertInstance(row())))
        await s.recordActivity(many.map((m, i) => ({ id: m.id, at: 10_000 + i })))
        const back = await s.listInstances({ limit: 1000 })
        for (const [i, m] of many.entries()) assert.equal(back.find((x) => x.id === m.id)?.lastActivityAt, 10_000 + i)
      }))

    test('assignment history: one open per instance, close, filters', () =>
      withStore(async (s) => {
        const i1 = newInstanceId()
        const i2 = newInstanceId()
        const a1 = await s.openAssignment({
          instanceId: i1,
          template: 'rstudio',
          userId: 'u1',
          keyName: 'portal',
          startedAt: 100,
        })
        assert.equal(typeof a1.id, 'number')
        assert.deepEqual(
          { ...a1, id: 0 },
          {
            id: 0,
            instanceId: i1,
            template: 'rstudio',
            userId: 'u1',
            keyName: 'portal',
            startedAt: 100,
            endedAt: null,
            endReason: null,
            cost: null,
          },
        )
        await assert.rejects(
          s.openAssignment({ instanceId: i1, template: 'rstudio', userId: 'u2', keyName: null, startedAt: 150 }),
          ConflictError,
        )
        const closed = await s.closeAssignment(i1, 200, 'idle', 1.25)
        assert.deepEqual(closed, { ...a1, endedAt: 200, endReason: 'idle', cost: 1.25 })
        assert.equal(await s.closeAssignment(i1, 300, 'user', null), undefined, 'nothing open any more')
        const a2 = await s.openAssignment({
          instanceId: i1,
          template: 'rstudio',
          userId: 'u2',
          keyName: null,
          startedAt: 250,
        })
        const a3 = await s.openAssignment({
          instanceId: i2,
          template: 'jupyter',
          userId: 'u1',
          keyName: null,
          startedAt: 400,
        })
        await s.closeAssignment(i2, 500, 'admin', null)
        const ids = (xs: { id: number }[]) => xs.map((x) => x.id)
        assert.deepEqual(ids(await s.listHistory()), [a3.id, a2.id, a1.id], 'newest first')
        assert.deepEqual(ids(await s.listHistory({ userId: 'u1' })), [a3.id, a1.id])
        assert.deepEqual(ids(await s.listHistory({ template: 'jupyter' })), [a3.id])
        assert.deepEqual(ids(await s.listHistory({ instanceId: i1 })), [a2.id, a1.id])
        assert.deepEqual(ids(await s.listHistory({ open: true })), [a2.id])
        assert.deepEqual(ids(await s.listHistory({ open: false })), [a3.id, a1.id])
        assert.deepEqual(ids(await s.listHistory({ endReason: 'idle' })), [a1.id])
        // overlap with [from, to): a1 = [100,200), a2 = [250,∞), a3 = [400,500)
        assert.deepEqual(ids(await s.listHistory({ from: 200, to: 250 })), [])
        assert.deepEqual(ids(await s.listHistory({ from: 199, to: 251 })), [a2.id, a1.id])
        assert.deepEqual(ids(await s.listHistory({ from: 1000 })), [a2.id])
        assert.deepEqual(ids(await s.listHistory({ to: 100 })), [])
        assert.deepEqual(ids(await s.listHistory({ limit: 1, offset: 1 })), [a2.id])
        assert.deepEqual(ids(await s.listHistory({ offset: 2 })), [a1.id])
      }))

    test('audit log', () =>
      withStore(async (s) => {
        const id = newInstanceId()
        await s.audit({
          at: 1,
          instanceId: id,
          event: 'created',
          actor: 'key:portal',
          detail: { template: 'rstudio', n: 1, nested: { ok: true } },
        })
        await s.audit({ at: 2, instanceId: null, event: 'pool.topup', actor: null, detail: {} })
        await s.audit({ at: 3, instanceId: id, event: 'ready', actor: 'system', detail: {} })
        const all = await s.listAudit()
        assert.deepEqual(
          all.map((e) => e.event),
          ['ready', 'pool.topup', 'created'],
        )
        const mine = await s.listAudit({ instanceId: id })
        assert.deepEqual(
          mine.map((e) => e.event),
          ['ready', 'created'],
        )
        assert.deepEqual(mine[1], {
          id: mine[1]!.id,
          at: 1,
          instanceId: id,
          event: 'created',
          actor: 'key:portal',
          detail: { template: 'rstudio', n: 1, nested: { ok: true } },
        })
        assert.equal((await s.listAudit({ limit: 1 })).length, 1)
      }))

    test('keyset pages: history (startedAt, id), audit (id), deliveries (seq) continue after a key; counts follow the filters', () =>
      withStore(async (s) => {
        // Three assignments start in the same millisecond: id breaks the tie, so none is skipped.
        const opened = []
        for (const [i, at] of [100, 200, 200, 200, 300].entries())
          opened.push(
            await s.openAssignment({
              instanceId: `i${i}`,
              template: 't',
              userId: i % 2 ? 'odd' : 'even',
              keyName: i === 4 ? 'portal' : null,
              startedAt: at,
            }),
          )
        const all = await s.listHistory()
        const pages: number[][] = []
        let before: { startedAt: number; id: number } | undefined
        for (;;) {
          const page = await s.listHistory({ before, limit: 2 })
          if (!page.length) break
          pages.push(page.map((a) => a.id))
          const last = page[page.length - 1]!
          before = { startedAt: last.startedAt, id: last.id }
        }
        assert.deepEqual(
          pages.flat(),
          all.map((a) => a.id),
          'the pages, one after the other, are the list',
        )
        assert.equal(pages.length, 3)
        assert.equal(await s.countHistory(), 5)
        assert.equal(await s.countHistory({ userId: 'even' }), 3)
        assert.equal(await s.countHistory({ keyName: 'portal' }), 1)
        assert.deepEqual(
          (await s.listHistory({ keyName: 'portal' })).map((a) => a.id),
          [opened[4]!.id],
        )
        assert.equal(await s.countHistory({ from: 250 }), 5, 'open assignments overlap any later time')

        await s.audit(
          Array.from({ length: 7 }, (_, i) => ({
            at: i,
            instanceId: i < 4 ? 'x' : 'y',
            event: 'e',
            actor: null,
            detail: {},
          })),
        )
        const audit = await s.listAudit()
        const a1 = await s.listAudit({ limit: 3 })
        const a2 = await s.listAudit({ limit: 3, beforeId: a1[2]!.id })
        const a3 = await s.listAudit({ limit: 3, beforeId: a2[2]!.id })
        assert.deepEqual(
          [...a1, ...a2, ...a3].map((e) => e.id),
          audit.map((e) => e.id),
        )
        assert.equal(await s.countAudit(), 7)
        assert.equal(await s.countAudit({ instanceId: 'x' }), 4)

        for (let i = 0; i < 5; i++)
          await s.webhooks.enqueue(['w'], { id: `e${i}`, type: 'session.ready', body: '{}' }, i)
        const d1 = await s.webhooks.list({ webhook: 'w', limit: 3 })
        const d2 = await s.webhooks.list({ webhook: 'w', limit: 3, beforeSeq: d1[2]!.seq })
        assert.deepEqual(
          [...d1, ...d2].map((d) => d.eventId),
          ['e4', 'e3', 'e2', 'e1', 'e0'],
        )
        assert.equal(await s.webhooks.count({ webhook: 'w' }), 5)
        assert.equal(await s.webhooks.count({ webhook: 'w', status: 'delivered' }), 0)
      }))

    test('api keys: insert, get, list, touch, revoke, unique names among live keys', () =>
      withStore(async (s) => {
        const k = {
          id: 'k1',
          name: 'portal',
          role: 'requester' as const,
          hash: 'h'.repeat(64),
          createdAt: 10,
          revokedAt: null,
          lastUsedAt: null,
        }
        await s.insertKey(k)
        assert.deepEqual(await s.getKey('k1'), k)
        assert.equal(await s.getKey('nope'), undefined)
        await assert.rejects(s.insertKey({ ...k, id: 'k2' }), ConflictError)
        await assert.rejects(s.insertKey({ ...k, name: 'other' }), ConflictError)
        await s.touchKey('k1', 50)
        assert.equal((await s.getKey('k1'))?.lastUsedAt, 50)
        assert.equal(await s.revokeKey('k1', 60), true)
        assert.equal(await s.revokeKey('k1', 70), false, 'already revoked')
        assert.equal(await s.revokeKey('nope', 70), false)
        assert.equal((await s.getKey('k1'))?.revokedAt, 60)
        await s.insertKey({ ...k, id: 'k2', role: 'admin', createdAt: 20 })
        assert.deepEqual(
          (await s.listKeys()).map((x) => [x.id, x.role, x.revokedAt]),
          [
            ['k1', 'requester', 60],
            ['k2', 'admin', null],
          ],
        )
      }))

    test('nonces are single use', () =>
      withStore(async (s) => {
        const now = 1_000_000
        assert.equal(await s.consumeNonce('n1', now + 60_000, now), true)
        assert.equal(await s.consumeNonce('n1', now + 60_000, now + 1), false)
        assert.equal(await s.consumeNonce('n2', now + 60_000, now + 2), true)
        const results = await Promise.all(
          Array.from({ length: 20 }, () => s.consumeNonce('race', now + 60_000, now + 3)),
        )
        assert.equal(results.filter(Boolean).length, 1)
        // much later: expired nonces may be purged, live ones stay used
        const later = now + 10 * 60_000
        assert.equal(await s.consumeNonce('n3', later + 60_000, later), true)
        assert.equal(await s.consumeNonce('n3', later + 60_000, later + 1), false)
      }))

    test('meta get, set and setIfAbsent', () =>
      withStore(async (s) => {
        assert.equal(await s.getMeta('a'), undefined)
        await s.setMeta('a', '1')
        assert.equal(await s.getMeta('a'), '1')
        await s.setMeta('a', '2')
        assert.equal(await s.getMeta('a'), '2')
        assert.equal(await s.setMetaIfAbsent('a', '3'), '2')
        assert.equal(await s.getMeta('a'), '2')
        assert.equal(await s.setMetaIfAbsent('b', 'x'), 'x')
        const raced = await Promise.all(['p', 'q', 'r', 's'].map((v) => s.setMetaIfAbsent('c', v)))
        assert.equal(new Set(raced).size, 1, 'everybody sees the same winner')
      }))

    test('state samples', () =>
      withStore(async (s) => {
        await s.recordStateSamples([])
        await s.recordStateSamples([
          { at: 100, template: 'rstudio', state: 'ready', count: 3 },
          { at: 100, template: 'jupyter', state: 'starting', count: 1 },
          { at: 200, template: 'rstudio', state: 'ready', count: 4 },
          { at: 300, template: 'rstudio', state: 'ready', count: 5 },
        ])
        assert.deepEqual(await s.listStateSamples(100, 300), [
          { at: 100, template: 'jupyter', state: 'starting', count: 1 },
          { at: 100, template: 'rstudio', state: 'ready', count: 3 },
          { at: 200, template: 'rstudio', state: 'ready', count: 4 },
        ])
        assert.deepEqual(await s.listStateSamples(301, 400), [])
        const many = Array.from({ length: 1200 }, (_, i) => ({
          at: 1000 + i,
          template: 't',
          state: 'ready' as const,
          count: i,
        }))
        await s.recordStateSamples(many)
        assert.equal((await s.listStateSamples(1000, 3000)).length, 1200)
        assert.equal(await s.purgeStateSamples(1000), 4, 'the samples before 1000 go')
        assert.deepEqual(await s.listStateSamples(0, 1000), [])
        assert.equal((await s.listStateSamples(1000, 3000)).length, 1200, 'later ones stay')
      }))

    test('transaction commits, and rolls back on throw', () =>
      withStore(async (s) => {
        const kept = await s.transaction(async (tx) => {
          const r = await tx.insertInstance(row())
          await tx.openAssignment({ instanceId: r.id, template: r.template, userId: 'u', keyName: null, startedAt: 1 })
          return r
        })
        assert.ok(await s.getInstance(kept.id))
        const lost = newInstanceId()
        await assert.rejects(
          s.transaction(async (tx) => {
            await tx.insertInstance(row({ id: lost }))
            await tx.setMeta('tx', 'x')
            assert.ok(await tx.getInstance(lost), 'visible inside the transaction')
            throw new Error('boom')
          }),
          /boom/,
        )
        assert.equal(await s.getInstance(lost), undefined)
        assert.equal(await s.getMeta('tx'), undefined)
        // a live-uniqueness violation inside a transaction surfaces as LiveInstanceExistsError and rolls it back
        await s.insertInstance(row({ ownerId: 'dup' }))
        const other = newInstanceId()
        await assert.rejects(
          s.withPoolLock(async (tx) => {
            await tx.insertInstance(row({ id: other }))
            await tx.insertInstance(row({ ownerId: 'dup' }))
          }),
          LiveInstanceExistsError,
        )
        assert.equal(await s.getInstance(other), undefined)
        // recordActivity works inside a transaction too
        const free = await s.insertInstance(row({ template: 'solo' }))
        await s.withPoolLock((tx) => tx.recordActivity([{ id: free.id, at: 99 }]))
        assert.equal((await s.getInstance(free.id))?.lastActivityAt, 99)
      }))

    test('tryLead: a single store leads', () =>
      withStore(async (s) => {
        assert.equal(await s.tryLead(), true)
        assert.equal(await s.tryLead(), true)
      }))

    test('concurrency: 50 users claim 10 free instances', () =>
      withStore(async (s) => {
        const free = await Promise.all(Array.from({ length: 10 }, (_, i) => s.insertInstance(row({ createdAt: i }))))
        const results = await Promise.allSettled(
          Array.from({ length: 50 }, (_, i) =>
            s.assignWarm([{ template: 'rstudio', userId: `user-${i}`, keyName: null }], 1000 + i),
          ),
        )
        const rejected = results.filter((r) => r.status === 'rejected')
        assert.deepEqual(rejected, [], 'no errors')
        const claimed = results.flatMap((r) =>
          r.status === 'fulfilled' && r.value[0]?.assigned ? [r.value[0].assigned] : [],
        )
        assert.equal(claimed.length, 10)
        assert.equal(new Set(claimed.map((c) => c.id)).size, 10, 'each instance claimed once')
        assert.equal(new Set(claimed.map((c) => c.ownerId)).size, 10, 'each user at most once')
        const rows = await s.listInstances()
        assert.equal(rows.length, 10)
        for (const r of rows) {
          const c = claimed.find((x) => x.id === r.id)
          assert.ok(c, 'every free instance went to someone')
          assert.equal(r.ownerId, c.ownerId)
        }
        assert.deepEqual(new Set(rows.map((r) => r.id)), new Set(free.map((f) => f.id)))
        assert.equal((await s.listHistory({})).length, 10, 'one assignment per claimed instance')
      }))

    test('concurrency: 20 claims by one user get one instance', () =>
      withStore(async (s) => {
        await Promise.all(Array.from({ length: 5 }, () => s.insertInstance(row())))
        const results = await Promise.allSettled(
          Array.from({ length: 20 }, () =>
            s.assignWarm([{ template: 'rstudio', userId: 'same-user', keyName: 'k' }], 42),
          ),
        )
        for (const r of results) {
          if (r.status === 'rejected')
            assert.ok(r.reason instanceof LiveInstanceExistsError, `unexpected error: ${String(r.reason)}`)
        }
        const claimed = results.flatMap((r) =>
          r.status === 'fulfilled' && r.value[0]?.assigned ? [r.value[0].assigned] : [],
        )
        for (const r of results)
          if (r.status === 'fulfilled' && !r.value[0]?.assigned)
            assert.equal(r.value[0]?.existing?.id, claimed[0]?.id, 'the others see it as existing')
        assert.equal(claimed.length, 1)
        const owned = await s.listInstances({ ownerId: 'same-user' })
        assert.equal(owned.length, 1)
        assert.equal(owned[0]!.id, claimed[0]!.id)
        assert.equal((await s.listInstances({ assigned: false })).length, 4)
        assert.equal((await s.listHistory({ userId: 'same-user' })).length, 1)
      }))

    test('concurrency: withPoolLock holds a cap of 50 under 200 simultaneous check-then-insert', () =>
      withStore(async (s) => {
        const CAP = 50
        const results = await Promise.all(
          Array.from({ length: 200 }, (_, i) =>
            s.withPoolLock(async (tx) => {
              const { total } = await tx.countActive()
              if (total >= CAP) return false
              // yield between the check and the insert, so an unserialized version would overshoot
              await new Promise((r) => setImmediate(r))
              await tx.insertInstance(row({ state: 'provisioning', ownerId: `u${i}` }))
              return true
            }),
          ),
        )
        assert.equal(results.filter(Boolean).length, CAP)
        assert.equal((await s.countActive()).total, CAP)
        assert.equal((await s.listInstances()).length, CAP)
      }))

    test('listAssignedIds, getInstance and countActive are right with 10,000 instances', () =>
      withStore(async (s) => {
        const N = 10_000
        const ids: string[] = []
        await s.transaction(async (tx) => {
          for (let i = 0; i < N; i++) {
            const assigned = i % 2 === 0
            const r = await tx.insertInstance(
              row({
                template: `t${i % 10}`,
                state: assigned ? 'ready' : i % 3 === 0 ? 'terminated' : 'ready',
                ownerId: assigned ? `user-${i}` : null,
                createdAt: i,
              }),
            )
            ids.push(r.id)
          }
        })
        // warm up, then measure
        await s.listAssignedIds()
        const t0 = performance.now()
        const assigned = await s.listAssignedIds()
        const listMs = performance.now() - t0
        assert.equal(assigned.length, N / 2)
        const t1 = performance.now()
        for (let i = 0; i < 100; i++) assert.ok(await s.getInstance(ids[(i * 97) % N]!))
        const getMs = (performance.now() - t1) / 100
        // getInstances: every row of the ids asked for, across its 500-id statements; unknown ids left out.
        const some = ids.filter((_, i) => i % 7 === 0)
        const many = await s.getInstances([...some, newInstanceId()])
        assert.deepEqual(many.map((r) => r.id).sort(), [...some].sort())
        assert.deepEqual(
          many.find((r) => r.id === ids[0]),
          await s.getInstance(ids[0]!),
        )
        assert.deepEqual(await s.getInstances([]), [])
        const t2 = performance.now()
        // Even rows are assigned and ready; odd rows are free, and a third of all rows are terminated.
        const active = Array.from({ length: N }, (_, i) => i % 2 === 0 || i % 3 !== 0).filter(Boolean).length
        assert.equal((await s.countActive()).total, active)
        const countMs = performance.now() - t2
        console.log(
          `# ${name}: listAssignedIds(10k rows, 5k assigned) ${listMs.toFixed(1)} ms; getInstance ${getMs.toFixed(2)} ms avg; countActive ${countMs.toFixed(1)} ms`,
        )
        // Timings are printed, not asserted (CI machines vary): `npm run bench:api` checks the target.
      }))

    test("assignWarm answers another requester's claim with the user's live row, its requester intact, and claims nothing (the pool's 409)", () =>
      withStore(async (s) => {
        await s.insertInstance(row({ state: 'ready', createdAt: 1 }))
        await s.insertInstance(row({ state: 'ready', createdAt: 2 }))
        // Two requesters race for one user: one instance is assigned; every other answer is that row.
        const claims = Array.from({ length: 10 }, (_, i) => ({
          template: 'rstudio',
          userId: 'alice',
          keyName: i % 2 ? 'portal-b' : 'portal-a',
        }))
        const results = await Promise.allSettled(claims.map((c, i) => s.assignWarm([c], 100 + i)))
        const ok = results
          .filter(
            (r): r is PromiseFulfilledResult<Awaited<ReturnType<Store['assignWarm']>>> => r.status === 'fulfilled',
          )
          .map((r) => r.value[0]!)
        for (const r of results)
          if (r.status === 'rejected') assert.ok(r.reason instanceof LiveInstanceExistsError, String(r.reason))
        const assigned = ok.filter((r) => r.assigned)
        assert.equal(assigned.length, 1, 'one claim got an instance')
        const winner = assigned[0]!.assigned!
        for (const r of ok.filter((x) => x.existing))
          assert.deepEqual([r.existing!.id, r.existing!.keyName], [winner.id, winner.keyName])
        const [after] = await s.assignWarm(
          [{ template: 'rstudio', userId: 'alice', keyName: winner.keyName === 'portal-a' ? 'portal-b' : 'portal-a' }],
          500,
        )
        assert.equal(after?.existing?.keyName, winner.keyName, "the other requester sees the winner's key name")
        assert.equal((await s.listInstances({ ownerId: 'alice' })).length, 1)
        assert.equal(
          (await s.listInstances({ assigned: false, states: ['ready'] })).length,
          1,
          'the other free instance is still free',
        )
        assert.equal((await s.listHistory({ userId: 'alice' })).length, 1)
      }))
  })
}
