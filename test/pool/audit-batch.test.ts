/**
 * The pool's audit batches (src/pool/audit-batch.ts): the rows of one turn are one write; rows
 * added while a write is in flight wait for it and go together in the next one; each add resolves
 * only once its own row is written; a failed batch is retried row by row, and a row that still
 * fails is reported without holding back the others.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AuditBatch } from '../../src/pool/audit-batch.js'

const row = (event: string) => ({ at: 1, instanceId: null, event, actor: null, detail: {} })

test('one write per turn, one in flight at a time, each add resolved after its row is written; failures retried row by row', async () => {
  const writes: string[][] = []
  const written = new Set<string>()
  let release: (() => void) | undefined
  const failing = new Set(['bad'])
  const batch = new AuditBatch(
    async (rows) => {
      writes.push(rows.map((r) => r.event))
      if (rows.length === 1 && rows[0]!.event === 'slow') await new Promise<void>((r) => (release = r))
      if (rows.some((r) => failing.has(r.event))) throw new Error('constraint')
      for (const r of rows) written.add(r.event)
    },
    (_err, r) => written.add(`error:${r.event}`),
  )
  const slow = batch.add(row('slow'))
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(writes, [['slow']], 'the first turn is one write, in flight')
  // Added over several turns while it is in flight: they wait, then go as one write.
  const later = [batch.add(row('a'))]
  await new Promise((r) => setImmediate(r))
  later.push(batch.add(row('b')), batch.add(row('bad')))
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(writes, [['slow']], 'nothing else starts while a write is in flight')
  let aDone = false
  void later[0]!.then(() => (aDone = true))
  release!()
  await slow
  assert.ok(written.has('slow'))
  await Promise.all(later)
  assert.ok(aDone)
  assert.deepEqual(writes, [['slow'], ['a', 'b', 'bad'], ['a'], ['b'], ['bad']])
  assert.deepEqual([...written].sort(), ['a', 'b', 'error:bad', 'slow'])
})
