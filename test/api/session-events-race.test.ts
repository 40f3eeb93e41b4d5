/**
 * The progress stream when a session's route goes before the store says it ended (the removal can
 * reach the stream before the write that ends the row is visible to the stream's read, e.g. on
 * another Postgres connection): the stream asks the store again until it says ended, and then
 * sends `ended` and closes — it used to wait forever (a CI run sat 600 s in the Postgres case).
 * A route that comes back (a replacement under the same id) keeps the stream going instead.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import type { ApiDeps } from '../../src/api/context.js'
import { openStream } from '../../src/api/routes/session-events.js'
import type { Instance, InstanceState } from '../../src/domain/instance.js'
import type { RouteEntry } from '../../src/domain/routes.js'
import { RouteHub } from '../../src/gateway/route-hub.js'
import { waitFor } from '../helpers/wait.js'

const ID = 'aaaaaaaaaaaaaaaaaaaa'
const row = (state: InstanceState, generation = 0): Instance => ({
  id: ID,
  template: 'demo',
  state,
  ownerId: 'ada',
  keyName: 'portal',
  providerRef: null,
  address: null,
  progress: 10,
  progressMessage: 'starting',
  progressTokenHash: null,
  failureReason: null,
  generation,
  createdAt: 1,
  updatedAt: 1,
  startedAt: 1,
  readyAt: null,
  assignedAt: 1,
  lastActivityAt: null,
  endedAt: state === 'terminated' ? 2 : null,
  endReason: state === 'terminated' ? 'user' : null,
  tags: {},
})
const route = (generation: number, progress: number): RouteEntry =>
  ({
    instanceId: ID,
    generation,
    state: 'starting',
    progress,
    progressMessage: `step ${progress}`,
    queuePosition: null,
    template: 'demo',
    ownerId: 'ada',
    address: null,
  }) as unknown as RouteEntry

describe('progress stream: a route removed before the row says ended', () => {
  let hub: RouteHub
  let srv: Server
  let url: string
  /** What the store answers, one state per read; the last one repeats. */
  let answers: InstanceState[] = []
  let reads = 0

  before(async () => {
    hub = new RouteHub()
    const deps = {
      store: {
        getInstance: async () => {
          reads++
          const state = answers.length > 1 ? answers.shift()! : answers[0]!
          return row(state)
        },
      },
    } as unknown as ApiDeps
    srv = createServer((_req, res) => openStream(deps, res, row('starting'), null, (l) => hub.subscribe(l)))
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/`
  })
  after(async () => {
    srv.closeAllConnections()
    await new Promise<void>((r) => srv.close(() => r()))
  })

  async function open() {
    const res = await fetch(url, { signal: AbortSignal.timeout(20_000) })
    let text = ''
    let closed = false
    const done = (async () => {
      for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) text += Buffer.from(c).toString()
      closed = true
    })()
    return { text: () => text, closed: () => closed, done }
  }

  test('the store still says starting at the removal: asked again, then `ended` and the stream closes', async () => {
    hub.upsert(route(0, 10))
    answers = ['starting', 'starting', 'terminated']
    reads = 0
    const s = await open()
    await waitFor('the first step', () => s.text().includes('event: progress'))
    hub.remove(ID, 'deleted')
    await s.done
    assert.match(s.text(), /event: ended\ndata: \{"instanceId":"a{20}","state":"terminated","reason":"user"\}/)
    assert.ok(reads >= 3, `the store was asked again (${reads} reads)`)
  })

  test('a route that comes back (a replacement) keeps the stream on the new generation', async () => {
    hub.upsert(route(0, 10))
    answers = ['starting']
    const s = await open()
    await waitFor('the first step', () => s.text().includes('event: progress'))
    hub.remove(ID, 'replaced')
    hub.upsert(route(1, 20))
    await waitFor('the replacement step', () => s.text().includes('"progress":20'))
    assert.equal(s.closed(), false, 'still open on the new generation')
    answers = ['terminated']
    hub.remove(ID, 'deleted')
    await s.done
    assert.match(s.text(), /event: ended/)
  })
})
