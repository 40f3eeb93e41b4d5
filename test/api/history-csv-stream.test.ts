/**
 * The dashboard's history export (GET /admin/history.csv) streams every row under its filter, a store
 * page at a time (it used to stop at 10,000 without saying so). Both stores; pages of 5 so that
 * ties in startedAt fall on page boundaries.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { historyCsvStream } from '../../src/api/routes/history.js'
import type { Store } from '../../src/store/store.js'
import { STORE_KINDS } from '../helpers/stores.js'

const T0 = Date.UTC(2026, 10, 1)

async function text(s: NodeJS.ReadableStream): Promise<string> {
  let out = ''
  for await (const chunk of s) out += String(chunk)
  return out
}

for (const kind of STORE_KINDS) {
  describe(`history CSV export streams every row (${kind.name})`, () => {
    let store: Store
    before(async () => {
      store = await kind.make()
      for (let i = 0; i < 23; i++)
        await store.openAssignment({
          instanceId: `csv-${String(i).padStart(2, '0')}`,
          template: 'demo',
          userId: i % 3 === 0 ? 'ada' : 'bo',
          keyName: null,
          // Three at a time share a start: the id breaks the tie across pages.
          startedAt: T0 + Math.floor(i / 3) * 1000,
        })
    })
    after(() => store?.close())

    test('all 23 rows in pages of 5, newest first, each once; a filter is kept on every page', async () => {
      const lines = (await text(historyCsvStream(store, {}, 5))).trimEnd().split('\r\n')
      assert.match(lines[0]!, /^id,instanceId,template,userId/)
      const rows = lines.slice(1).map((l) => l.split(','))
      assert.equal(rows.length, 23)
      assert.equal(new Set(rows.map((r) => r[1])).size, 23, 'no row twice')
      const starts = rows.map((r) => Date.parse(r[5]!))
      assert.deepEqual(
        starts,
        [...starts].sort((a, b) => b - a),
        'newest first',
      )
      const ada = (await text(historyCsvStream(store, { userId: 'ada' }, 5))).trimEnd().split('\r\n').slice(1)
      assert.equal(ada.length, 8)
      assert.ok(ada.every((l) => l.split(',')[3] === 'ada'))
      // The same rows as one page of the REST API's CSV.
      const one = (await text(historyCsvStream(store, {}, 1000))).trimEnd().split('\r\n')
      assert.deepEqual(one, lines)
    })
  })
}
