import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { createServer as createTcpServer, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { probeHttp } from '../../src/providers/http-probe.js'

describe('probeHttp', () => {
  let server: Server
  let base: string
  let paths: string[] = []

  before(async () => {
    server = createServer((req, res) => {
      paths.push(req.url ?? '')
      const m = /^\/status\/(\d{3})$/.exec(req.url ?? '')
      if (m) {
        res.writeHead(Number(m[1]), { location: '/elsewhere' })
        return res.end('x')
      }
      if (req.url === '/stream') {
        // An endless body: the probe must not read it to the end.
        res.writeHead(200)
        const t = setInterval(() => res.write('tick\n'), 5)
        res.on('close', () => clearInterval(t))
        return
      }
      res.writeHead(200)
      res.end('ok')
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  after(async () => {
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  })

  it('is ok for any status below 500 (apps redirect, 401 or 404 at their root)', async () => {
    for (const status of [200, 204, 302, 401, 404, 499]) {
      assert.deepEqual(await probeHttp(base, `/status/${status}`, { timeoutMs: 2000 }), { ok: true, status })
    }
  })

  it('is not ok for 5xx', async () => {
    for (const status of [500, 502, 503]) {
      assert.deepEqual(await probeHttp(base, `/status/${status}`, { timeoutMs: 2000 }), {
        ok: false,
        status,
        error: `HTTP ${status}`,
      })
    }
  })

  it('joins address and path with exactly one slash', async () => {
    paths = []
    await probeHttp(`${base}/`, 'healthz', { timeoutMs: 2000 })
    await probeHttp(base, '/s/abc/healthz', { timeoutMs: 2000 })
    assert.deepEqual(paths, ['/healthz', '/s/abc/healthz'])
  })

  it('does not read an endless body', async () => {
    const t0 = Date.now()
    assert.deepEqual(await probeHttp(base, '/stream', { timeoutMs: 2000 }), { ok: true, status: 200 })
    assert.ok(Date.now() - t0 < 1500)
  })

  it('is not ok when nothing listens', async () => {
    const closed = createTcpServer()
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r))
    const port = (closed.address() as AddressInfo).port
    await new Promise((r) => closed.close(r))
    const res = await probeHttp(`http://127.0.0.1:${port}`, '/', { timeoutMs: 2000 })
    assert.equal(res.ok, false)
    assert.equal(res.error, 'ECONNREFUSED')
  })

  it('times out on a listener that never answers', async () => {
    const sockets = new Set<Socket>()
    const silent = createTcpServer((s) => {
      sockets.add(s)
      s.on('error', () => {})
    })
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
    try {
      const t0 = Date.now()
      const res = await probeHttp(`http://127.0.0.1:${(silent.address() as AddressInfo).port}`, '/', { timeoutMs: 300 })
      const took = Date.now() - t0
      assert.equal(res.ok, false)
      assert.equal(res.error, 'timeout')
      assert.ok(took >= 250 && took < 2000, `took ${took} ms`)
    } finally {
      for (const s of sockets) s.destroy()
      await new Promise((r) => silent.close(r))
    }
  })

  it('stops when its signal aborts', async () => {
    const sockets = new Set<Socket>()
    const silent = createTcpServer((s) => sockets.add(s))
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
    try {
      const ac = new AbortController()
      const p = probeHttp(`http://127.0.0.1:${(silent.address() as AddressInfo).port}`, '/', {
        timeoutMs: 10_000,
        signal: ac.signal,
      })
      ac.abort()
      const t0 = Date.now()
      const res = await p
      assert.equal(res.ok, false)
      assert.ok(Date.now() - t0 < 1000)
    } finally {
      for (const s of sockets) s.destroy()
      await new Promise((r) => silent.close(r))
    }
  })
})
