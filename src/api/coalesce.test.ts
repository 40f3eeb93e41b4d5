import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Coalescer, RawJson } from './coalesce.js'

function deferred<T>() {
  let resolve!: (v: T) => void
  let reject!: (e: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

test('callers that arrive together share one call', async () => {
  let calls = 0
  const c = new Coalescer(async () => ++calls)
  const results = await Promise.all(Array.from({ length: 20 }, () => c.get()))
  assert.equal(calls, 1)
  assert.deepEqual(new Set(results), new Set([1]))
})

test('a caller never gets the result of a call that started before it arrived', async () => {
  const gates: ReturnType<typeof deferred<number>>[] = []
  const c = new Coalescer(() => {
    const d = deferred<number>()
    gates.push(d)
    return d.promise
  })
  const first = c.get()
  const deadline = Date.now() + 2000
  while (gates.length === 0 && Date.now() < deadline) await new Promise((r) => setImmediate(r))
  assert.equal(gates.length, 1, 'the first call started')
  // Arrives while the first call runs: must wait for a second call, and so must a third caller.
  const second = c.get()
  const third = c.get()
  gates[0]!.resolve(1)
  assert.equal(await first, 1)
  const until = Date.now() + 2000
  while (gates.length === 1 && Date.now() < until) await new Promise((r) => setImmediate(r))
  assert.equal(gates.length, 2, 'a second call started after the first ended')
  gates[1]!.resolve(2)
  assert.equal(await second, 2)
  assert.equal(await third, 2)
})

test('a failed call fails its callers only; the next caller calls again', async () => {
  let calls = 0
  const c = new Coalescer(async () => {
    calls++
    if (calls === 1) throw new Error('store down')
    return 'ok'
  })
  const [a, b] = await Promise.allSettled([c.get(), c.get()])
  assert.equal(a.status, 'rejected')
  assert.equal(b.status, 'rejected')
  assert.equal(await c.get(), 'ok')
  assert.equal(calls, 2)
})

test('RawJson serializes once and stays JSON-compatible', () => {
  const r = new RawJson({ instances: ['a', 'b'] })
  assert.equal(r.bytes.toString(), '{"instances":["a","b"]}')
  assert.equal(JSON.stringify({ x: r }), '{"x":{"instances":["a","b"]}}')
})
