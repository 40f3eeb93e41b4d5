import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import WebSocket from 'ws'
import { WsFrameScanner } from '../../src/gateway/forward.js'
import { waitFor } from '../helpers/wait.js'
import { route, startGateway, startUpstream } from './helpers.js'
import type { TestGateway, Upstream } from './helpers.js'

function open(
  url: string,
  headers: Record<string, string>,
): Promise<{ ws: WebSocket; messages: string[]; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers })
    const messages: string[] = []
    ws.on('message', (d) => messages.push(d.toString()))
    const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)))
    const t = setTimeout(() => reject(new Error('open timed out')), 5000)
    ws.once('open', () => {
      clearTimeout(t)
      resolve({ ws, messages, closed })
    })
    ws.once('error', (e) => {
      clearTimeout(t)
      reject(e)
    })
  })
}

const ids = (batches: { id: string; at: number }[][]) => batches.flat().map((e) => e.id)

describe('WebSockets and activity', () => {
  let app: Upstream
  let g: TestGateway
  const client = new Agent()
  const a = route({ address: '', ownerId: 'alice' })
  const b = route({ address: '', ownerId: 'bob' })

  before(async () => {
    app = await startUpstream()
    g = await startGateway()
    g.hub.upsert({ ...a, address: app.url })
    g.hub.upsert({ ...b, address: app.url })
  })
  after(async () => {
    await client.close()
    await g.close()
    await app.close()
  })

  const wsUrl = (id: string) => `ws://127.0.0.1:${g.port}/s/${id}/ws?x=1`

  test('echo through the gateway: text, binary, large frames; the app sees the stripped path and no gateway cookie', async () => {
    const c = await open(wsUrl(a.instanceId), { cookie: `${g.cookie('alice')}; app=1`, origin: g.base })
    await waitFor('hello', () => c.messages.length >= 1, 5000)
    assert.deepEqual(JSON.parse(c.messages[0]!), { hello: '/ws?x=1', cookie: 'app=1' })
    c.ws.send('hi there')
    const big = 'x'.repeat(200_000) // 64-bit length frame header
    c.ws.send(big)
    await waitFor('echoes', () => c.messages.length >= 3, 5000)
    const got = new Promise<Buffer>((r) => c.ws.once('message', (d) => r(d as Buffer)))
    assert.equal(c.messages[1], 'hi there')
    assert.equal(c.messages[2]!.length, big.length)
    c.ws.send(Buffer.from([1, 2, 3]))
    assert.deepEqual([...(await got)], [1, 2, 3])
    c.ws.close()
    assert.equal(await c.closed, 1005)
  })

  test('client messages count as activity; server pushes and pings do not', async () => {
    const c = await open(wsUrl(a.instanceId), { cookie: g.cookie('alice') })
    await waitFor('hello', () => c.messages.length >= 1, 5000)
    await g.gw.flushActivity()
    g.activity.length = 0
    // Pings from the client and the server's pushes (with server pings) are not activity.
    c.ws.ping()
    c.ws.pong()
    await g.gw.flushActivity()
    assert.deepEqual(ids(g.activity), [], 'a ping is not activity')
    c.ws.send('push') // this message itself is activity; flush it away first
    await waitFor('first push', () => c.messages.some((m) => m.startsWith('pushed')), 5000)
    await g.gw.flushActivity()
    assert.deepEqual(ids(g.activity), [a.instanceId])
    g.activity.length = 0
    await waitFor('pushes', () => c.messages.filter((m) => m.startsWith('pushed')).length >= 10, 5000)
    await g.gw.flushActivity()
    assert.deepEqual(ids(g.activity), [], 'server pushes and pings are not activity')
    // One write per instance per interval however many messages.
    for (let i = 0; i < 20; i++) c.ws.send('m' + i)
    await waitFor('echo m19', () => c.messages.includes('m19'), 5000)
    await g.gw.flushActivity()
    assert.equal(g.activity.length, 1)
    assert.deepEqual(ids(g.activity), [a.instanceId])
    c.ws.terminate()
  })

  test('an HTTP request counts, for its own instance only; an SSE stream from the app adds nothing after it', async () => {
    await g.gw.flushActivity()
    g.activity.length = 0
    const r = await request(`${g.base}/s/${b.instanceId}/echo`, {
      dispatcher: client,
      headers: { cookie: g.cookie('bob') },
    })
    await r.body.dump()
    await g.gw.flushActivity()
    assert.deepEqual(ids(g.activity), [b.instanceId])
    const at = g.activity[0]![0]!.at
    assert.ok(Math.abs(at - Date.now()) < 5000)
    // Refused requests are not activity.
    g.activity.length = 0
    const denied = await request(`${g.base}/s/${b.instanceId}/echo`, {
      dispatcher: client,
      headers: { cookie: g.cookie('alice') },
    })
    await denied.body.dump()
    await g.gw.flushActivity()
    assert.deepEqual(ids(g.activity), [])
  })

  test("the template's keep-alive polling paths are not activity, in strip and keep mode", async () => {
    for (const pathMode of ['strip', 'keep'] as const) {
      const c = route({
        address: app.url,
        ownerId: 'carol',
        pathMode,
        activityIgnore: ['^/events/get_events$', '^/api/(kernels|sessions)$'],
      })
      g.hub.upsert(c)
      const get = async (path: string) => {
        const r = await request(`${g.base}/s/${c.instanceId}${path}`, {
          dispatcher: client,
          headers: { cookie: g.cookie('carol') },
        })
        await r.body.dump()
        assert.equal(r.statusCode, 200, path)
        await g.gw.flushActivity()
      }
      g.activity.length = 0
      await get('/events/get_events?id=3')
      await get('/api/kernels')
      assert.deepEqual(ids(g.activity), [], `polling is not activity (${pathMode})`)
      await get('/api/kernels/abc')
      assert.deepEqual(ids(g.activity), [c.instanceId], `other paths are (${pathMode})`)
      g.hub.remove(c.instanceId, 'test')
    }
  })

  test('removing a route closes its WebSockets but not those of another instance', async () => {
    const ca = await open(wsUrl(a.instanceId), { cookie: g.cookie('alice') })
    const cb = await open(wsUrl(b.instanceId), { cookie: g.cookie('bob') })
    await waitFor('hellos', () => ca.messages.length >= 1 && cb.messages.length >= 1, 5000)
    await waitFor(
      'gauge at 2',
      async () => /studiopool_gateway_websockets_open\{template="demo"\} 2\n/.test(await g.registry.metrics()),
      5000,
    )
    g.hub.remove(a.instanceId, 'deleted')
    const code = await Promise.race([
      ca.closed,
      new Promise<number>((_, rej) => setTimeout(() => rej(new Error('not closed')), 5000)),
    ])
    assert.equal(code, 1006)
    cb.ws.send('still here')
    await waitFor('b still works', () => cb.messages.includes('still here'), 5000)
    // A new generation of b drops b's connections too.
    g.hub.upsert({ ...b, address: app.url, generation: 2 })
    await Promise.race([
      cb.closed,
      new Promise<number>((_, rej) => setTimeout(() => rej(new Error('not closed')), 5000)),
    ])
    await waitFor(
      'gauge back to 0',
      async () => /studiopool_gateway_websockets_open\{template="demo"\} 0/.test(await g.registry.metrics()),
      5000,
    )
  })
})

describe('WsFrameScanner', () => {
  function frame(opcode: number, len: number, masked = true): Buffer {
    const ext = len < 126 ? 0 : len < 65536 ? 2 : 8
    const h = Buffer.alloc(2 + ext + (masked ? 4 : 0))
    h[0] = 0x80 | opcode
    h[1] = (masked ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127)
    if (ext === 2) h.writeUInt16BE(len, 2)
    if (ext === 8) h.writeBigUInt64BE(BigInt(len), 2)
    return Buffer.concat([h, Buffer.alloc(len, 7)])
  }

  test('counts data frames, skips control frames, across any chunking', () => {
    const stream = Buffer.concat([
      frame(1, 5),
      frame(9, 3),
      frame(2, 300),
      frame(10, 0),
      frame(1, 70_000),
      frame(8, 2),
      frame(0, 1),
    ])
    for (const size of [1, 2, 3, 7, 13, 100, 4096, stream.length]) {
      let n = 0
      const s = new WsFrameScanner(() => n++)
      for (let i = 0; i < stream.length; i += size) s.feed(stream.subarray(i, i + size))
      assert.equal(n, 4, `chunk size ${size}`)
    }
  })
})
