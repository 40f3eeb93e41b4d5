/**
 * The store guard (issue 9 item 4), against a scripted inner store: driver errors that mean
 * "unavailable" become StoreUnavailableError (503 STORE_UNAVAILABLE); other errors pass unchanged;
 * a failed write is remembered for /readyz; while the connection is lost one call at a time tries
 * it and the rest fail at once; a success ends that.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { ConflictError, StoreUnavailableError } from '../../src/domain/errors.js'
import { guardStore } from '../../src/store/store-guard.js'
import type { Store } from '../../src/store/store.js'

function scripted() {
  let next: () => Promise<unknown> = async () => 'ok'
  let calls = 0
  const inner = {
    dialect: 'postgres',
    async getMeta() {
      calls++
      return next()
    },
    async setMeta() {
      calls++
      await next()
    },
    async close() {},
  }
  return {
    store: guardStore(inner as unknown as Store, { log: pino({ level: 'silent' }) }),
    set: (f: () => Promise<unknown>) => (next = f),
    calls: () => calls,
  }
}

const refused = () =>
  Promise.reject(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }))

test('unavailable driver errors become StoreUnavailableError; others pass unchanged', async () => {
  const s = scripted()
  s.set(refused)
  await assert.rejects(
    s.store.getMeta('k'),
    (err: unknown) => err instanceof StoreUnavailableError && err.statusCode === 503 && (err.retryAfter ?? 0) > 0,
  )
  s.set(() => Promise.reject(new ConflictError('taken')))
  // The first call after a connection loss is the probe: it reaches the driver, and its own error passes.
  await assert.rejects(s.store.getMeta('k'), ConflictError)
  s.set(() => Promise.reject(Object.assign(new Error('duplicate key'), { code: '23505' })))
  await assert.rejects(s.store.getMeta('k'), (err: unknown) => (err as { code?: string }).code === '23505')
  assert.equal(s.store.dialect, 'postgres')
})

test('a failed write is remembered with its reason; a failed read is not a write error', async () => {
  const s = scripted()
  s.set(() => Promise.reject(Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' })))
  await assert.rejects(s.store.getMeta('k'), StoreUnavailableError)
  assert.equal(s.store.health().lastWriteError, undefined)
  assert.equal(s.store.health().lastError?.reason, 'disk full')
  await assert.rejects(s.store.setMeta('k', 'v'), StoreUnavailableError)
  assert.equal(s.store.health().lastWriteError?.reason, 'disk full')
  // A full disk is not a lost connection: the next calls still reach the driver.
  const before = s.calls()
  await Promise.allSettled([s.store.getMeta('a'), s.store.getMeta('b')])
  assert.equal(s.calls(), before + 2)
})

test('connection lost: one probe at a time reaches the driver, the others fail at once; a success ends it', async () => {
  const s = scripted()
  s.set(refused)
  await assert.rejects(s.store.getMeta('k'), StoreUnavailableError)
  let release!: (v: unknown) => void
  s.set(() => new Promise((r) => (release = r)))
  const probe = s.store.getMeta('probe')
  const n = s.calls()
  const t0 = performance.now()
  await assert.rejects(s.store.getMeta('other'), StoreUnavailableError)
  await assert.rejects(s.store.setMeta('other', 'v'), StoreUnavailableError)
  assert.equal(s.calls(), n, 'no other call reached the driver while the probe was out')
  assert.ok(performance.now() - t0 < 50)
  release('back')
  assert.equal(await probe, 'back')
  s.set(async () => 'fine')
  assert.equal(await s.store.getMeta('k'), 'fine')
  assert.equal(await s.store.getMeta('k'), 'fine')
})
