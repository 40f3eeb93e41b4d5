/**
 * The seed's command protocol as its clients use it (contract 1), the seed's env keys, and the API's
 * surface: OpenAPI, docs, health, readiness and metrics. Real server, real socket, SQLite and Postgres.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import { loadConfig } from '../../src/config/load.js'
import { start } from '../../src/main.js'
import { dropSchemas } from '../helpers/pg.js'
import { call, command, startAppStub, startServer, STORES, waitFor, type TestServer } from './helpers.js'

after(dropSchemas)

const ARENA = 'arena-requester-key-0123456789'
const PROXY = 'proxy-key-0123456789-abcdef'
const ID_RE = /^[a-z2-7]{20}$/

for (const kind of STORES) {
  describe(`command protocol and API surface (${kind})`, () => {
    let app: Awaited<ReturnType<typeof startAppStub>>
    let s: TestServer

    before(async () => {
      app = await startAppStub()
      const addr = JSON.stringify(app.url)
      s = await startServer(
        kind,
        `worker: { interval: 1h }
templates:
  demo:
    provider: fake
    minFree: 1
    fake: { address: ${addr} }
  cold:
    provider: fake
    fake: { address: ${addr} }
  tiny:
    provider: fake
    maxInstances: 1
    fake: { address: ${addr} }
  broken:
    provider: fake
    fake: { validationError: "no such image" }
`,
        { ARENA_POOL_SERVICE_KEY: ARENA, PROXY_KEY: PROXY },
      )
      await waitFor(
        'a warm demo instance',
        async () =>
          (await s.store.listInstances({ template: 'demo', assigned: false, states: ['ready'] })).length === 1,
        10_000,
      )
    })
    after(async () => {
      await s?.close()
      await app?.close()
    })

    test('seed flow: REQUEST_RSTUDIO, GET_STATUS list and one, DELETE twice; x-api-key; env keys', async () => {
      // The seed posted to / with its key; x-api-key works as well as Authorization: Bearer.
      const r = await call(s.url, 'POST', '/', {
        body: { command: 'REQUEST_RSTUDIO', payload: { userId: 'student-1' } },
        headers: { 'x-api-key': ARENA },
      })
      assert.equal(r.status, 200, r.text)
      assert.match(r.json.instanceId, ID_RE)
      const id: string = r.json.instanceId
      assert.equal(r.json.state, 'ready', 'a warm hit is ready at once')
      assert.equal(r.json.outcome, 'warm')
      const launch = new URL(r.json.url)
      assert.equal(`${launch.origin}${launch.pathname}`, `${s.url}/s/${id}/`)
      assert.ok(launch.search.length > 10, 'the launch URL carries a token')
      assert.equal(r.json.sessionUrl, `${s.url}/s/${id}/`)

      const again = await command(s.url, ARENA, 'REQUEST_RSTUDIO', { userId: 'student-1' }, '/')
      assert.equal(again.json.instanceId, id, 'the same user gets the same instance')
      assert.notEqual(again.json.url, r.json.url, 'every launch URL has a fresh token')

      for (const key of [ARENA, PROXY, s.adminKey]) {
        const list = await command(s.url, key, 'GET_STATUS', {}, '/')
        assert.equal(list.status, 200, list.text)
        assert.deepEqual(Object.keys(list.json), ['instances'])
        assert.ok(list.json.instances.includes(id))
        assert.ok(list.json.instances.every((x: string) => ID_RE.test(x)))
      }

      await s.store.updateInstance(id, {
        tags: { Purpose: 'RStudio', course: 'stats-101', url: 'http://attacker.example/', userId: 'mallory' },
      })
      const one = await command(s.url, ARENA, 'GET_STATUS', { instanceId: id, userId: 'student-1' })
      assert.equal(one.status, 200, one.text)
      const inst = one.json.instance
      assert.equal(inst.instanceId, id)
      assert.equal(inst.url, `${s.url}/s/${id}/`, 'the clean session URL, no token, not overridden by a tag')
      assert.equal(inst.userId, 'student-1')
      assert.equal(inst.template, 'demo')
      assert.equal(inst.state, 'ready')
      assert.equal(inst.progress, 100)
      // The seed's keyName is the EC2 key pair: absent for the local demo app; the API key's name is requesterKey.
      assert.equal(inst.keyName, undefined)
      assert.equal(inst.requesterKey, 'arena')
      assert.equal(inst.Purpose, 'RStudio')
      assert.equal(inst.course, 'stats-101')
      for (const f of ['createdAt', 'assignedAt', 'lastActivityAt']) assert.ok(!Number.isNaN(Date.parse(inst[f])), f)
      // Proxy keys need not name the owner.
      assert.equal((await command(s.url, PROXY, 'GET_STATUS', { instanceId: id })).json.instance.instanceId, id)
      // REST gives the same view.
      const restOne = await call(s.url, 'GET', `/api/v1/instances/${id}?userId=student-1`, { key: ARENA })
      assert.deepEqual(restOne.json, one.json)

      for (let i = 0; i < 2; i++) {
        const d = await command(s.url, ARENA, 'DELETE', { instanceId: id }, '/')
        assert.equal(d.status, 200, d.text)
        assert.deepEqual(d.json, { status: 'OK' })
      }
      const unknown = await command(s.url, ARENA, 'DELETE', { instanceId: 'a'.repeat(20) })
      assert.deepEqual(unknown.json, { status: 'OK' }, 'an unknown id is OK too (idempotent)')
      await s.running.pool!.drain()
      const gone = await command(s.url, PROXY, 'GET_STATUS', {})
      assert.ok(!gone.json.instances.includes(id))
      const hist = await call(s.url, 'GET', `/api/v1/history?userId=student-1`, { key: ARENA })
      assert.equal(hist.json.history.length, 1)
      assert.equal(hist.json.history[0].endReason, 'user')
    })

    test('REQUEST_SESSION and REST sessions are the same operation; a proxy key can DELETE', async () => {
      const a = await call(s.url, 'POST', '/api/v1/sessions', {
        key: ARENA,
        body: { userId: 'student-2', template: 'cold' },
      })
      // A cold start is accepted, not done: 202 with the state (the command protocol below stays 200).
      assert.equal(a.status, 202, a.text)
      assert.notEqual(a.json.state, 'ready')
      assert.equal(a.json.outcome, 'cold')
      const b = await command(s.url, ARENA, 'REQUEST_SESSION', { userId: 'student-2', template: 'cold' })
      assert.equal(b.status, 200, 'the seed protocol answers 200 even while the session starts')
      assert.equal(b.json.instanceId, a.json.instanceId)
      assert.equal(b.json.outcome, 'existing')
      await waitFor(
        'cold start ready',
        async () =>
          (await command(s.url, ARENA, 'GET_STATUS', { instanceId: a.json.instanceId, userId: 'student-2' })).json
            .instance.state === 'ready',
        10_000,
      )
      assert.deepEqual((await command(s.url, PROXY, 'DELETE', { instanceId: a.json.instanceId })).json, {
        status: 'OK',
      })
      await s.running.pool!.drain()
      assert.equal((await s.store.getInstance(a.json.instanceId))?.state, 'terminated')
    })

    test('/healthz is open; /readyz reports the store and each template', async () => {
      const h = await call(s.url, 'GET', '/healthz')
      assert.equal(h.status, 200)
      assert.deepEqual(h.json, { status: 'ok' })
      const r = await call(s.url, 'GET', '/readyz')
      assert.equal(r.status, 200)
      assert.equal(r.json.status, 'ready')
      assert.equal(r.json.checks.store, 'ok')
      assert.equal(r.json.checks['template:demo'], 'ok')
      assert.match(r.json.checks['template:broken'], /unavailable: .*no such image/)
    })

    test('/metrics needs an admin or proxy key and shows pool sizes, requests, warm vs cold, the queue', async () => {
      assert.equal((await call(s.url, 'GET', '/metrics')).status, 401)
      assert.equal((await call(s.url, 'GET', '/metrics', { key: ARENA })).status, 403)
      // One queued request: tiny holds one instance.
      const first = await command(s.url, ARENA, 'REQUEST_SESSION', { userId: 'q1', template: 'tiny' })
      const second = await command(s.url, ARENA, 'REQUEST_SESSION', { userId: 'q2', template: 'tiny' })
      assert.equal(first.json.outcome, 'cold')
      assert.equal(second.json.outcome, 'queued')
      assert.equal(second.json.state, 'queued')
      assert.equal(second.json.queuePosition, 1)
      await s.running.pool!.drain()
      for (const key of [s.adminKey, PROXY]) {
        const m = await call(s.url, 'GET', '/metrics', { key })
        assert.equal(m.status, 200)
        assert.match(String(m.headers['content-type']), /^text\/plain/)
        const t = m.text
        assert.match(t, /^studiopool_instances\{template="demo",state="ready",assigned="false"\} 1$/m)
        assert.match(t, /^studiopool_instances\{template="tiny",state="ready",assigned="true"\} 1$/m)
        assert.match(t, /^studiopool_requests_total\{template="demo",outcome="warm"\} \d+$/m)
        assert.match(t, /^studiopool_requests_total\{template="tiny",outcome="queued"\} 1$/m)
        assert.match(t, /^studiopool_assignments_total\{template="demo",kind="warm"\} 1$/m)
        assert.match(t, /^studiopool_assignments_total\{template="cold",kind="cold"\} 1$/m)
        assert.match(t, /^studiopool_queue_length\{template="tiny"\} 1$/m)
        assert.match(t, /^studiopool_queue_length\{template="demo"\} 0$/m)
        assert.match(t, /^studiopool_api_request_seconds_bucket\{/m)
      }
      await command(s.url, ARENA, 'DELETE', { instanceId: first.json.instanceId })
      await command(s.url, ARENA, 'DELETE', { instanceId: second.json.instanceId })
      await s.running.pool!.drain()
    })

    test('GET /api/v1/openapi.json is an OpenAPI 3 document listing the routes, with every $ref resolved', async () => {
      const r = await call(s.url, 'GET', '/api/v1/openapi.json')
      assert.equal(r.status, 200)
      const doc = r.json
      assert.match(doc.openapi, /^3\.\d+\.\d+$/)
      assert.equal(typeof doc.info.title, 'string')
      assert.equal(typeof doc.info.version, 'string')
      const want = [
        'post /api/commands',
        'post /api/v1/sessions',
        'get /api/v1/sessions',
        'get /api/v1/instances',
        'get /api/v1/instances/{id}',
        'delete /api/v1/instances/{id}',
        'post /api/v1/instances/{id}/stop',
        'post /api/v1/instances/{id}/restart',
        'post /api/v1/instances/{id}/suspend',
        'post /api/v1/instances/{id}/resume',
        'post /api/v1/instances/{id}/progress',
        'get /api/v1/templates',
        'get /api/v1/pool',
        'get /api/v1/pool/queue',
        'get /api/v1/history',
        'get /api/v1/usage',
        'get /api/v1/keys',
        'post /api/v1/keys',
        'delete /api/v1/keys/{id}',
        'get /healthz',
        'get /readyz',
        'get /metrics',
      ]
      const have = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) =>
        Object.keys(ops).map((m) => `${m} ${p}`),
      )
      for (const w of want) assert.ok(have.includes(w), `missing ${w}`)
      const methods = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'])
      for (const [p, ops] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
        assert.ok(p.startsWith('/') && !p.includes(':'), `path ${p} uses {param}, not :param`)
        const params = [...p.matchAll(/\{(\w+)\}/g)].map((m) => m[1])
        for (const [m, op] of Object.entries(ops)) {
          if (m === 'parameters') continue
          assert.ok(methods.has(m), `${p}: ${m} is not an HTTP method`)
          assert.ok(op.responses && Object.keys(op.responses).length > 0, `${m} ${p} has no responses`)
          for (const name of params)
            assert.ok(
              (op.parameters ?? []).some((x: any) => x.in === 'path' && x.name === name && x.required === true),
              `${m} ${p} does not declare path parameter ${name}`,
            )
        }
      }
      // Every $ref points at something in the document.
      const refs: string[] = []
      const walk = (v: unknown) => {
        if (Array.isArray(v)) v.forEach(walk)
        else if (v && typeof v === 'object')
          for (const [k, x] of Object.entries(v)) {
            if (k === '$ref') refs.push(String(x))
            else walk(x)
          }
      }
      walk(doc)
      for (const ref of refs) {
        assert.ok(ref.startsWith('#/'), `external $ref ${ref}`)
        let node: any = doc
        for (const part of ref.slice(2).split('/')) node = node?.[part.replace(/~1/g, '/').replace(/~0/g, '~')]
        assert.ok(node !== undefined, `unresolved $ref ${ref}`)
      }
      assert.ok(refs.includes('#/components/schemas/Error'), 'errors are documented with the envelope schema')
    })

    test('/api/docs serves HTML whose assets are all local', async () => {
      const r = await call(s.url, 'GET', '/api/docs/')
      assert.equal(r.status, 200)
      assert.match(String(r.headers['content-type']), /^text\/html/)
      const csp = String(r.headers['content-security-policy'])
      assert.doesNotMatch(csp, /https:|http:|upgrade-insecure-requests|swagger\.io/, csp)
      const refs = [...r.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!)
      assert.ok(refs.length >= 3)
      for (const ref of refs) {
        assert.doesNotMatch(ref, /^(https?:)?\/\//, `external asset ${ref}`)
        const asset = await call(s.url, 'GET', new URL(ref, `${s.url}/api/docs/`).pathname)
        assert.equal(asset.status, 200, ref)
      }
      assert.deepEqual(
        (await call(s.url, 'GET', '/api/docs/json')).json,
        (await call(s.url, 'GET', '/api/v1/openapi.json')).json,
        'the docs render the same document',
      )
    })

    test('a text/plain body is refused with "send JSON"', async () => {
      const r = await call(s.url, 'POST', '/api/commands', {
        key: ARENA,
        body: '{"command":"GET_STATUS"}',
        headers: { 'content-type': 'text/plain' },
      })
      assert.equal(r.status, 400)
      assert.equal(r.json.error.code, 'INVALID_REQUEST')
      assert.match(r.json.error.message, /JSON/)
    })
  })
}

describe('auth: none', () => {
  test('is said loudly at start, and then requests need no key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sp-noauth-'))
    const lines: string[] = []
    const log = pino({ level: 'warn' }, new Writable({ write: (chunk, _enc, cb) => (lines.push(String(chunk)), cb()) }))
    const config = loadConfig({
      text: `auth: { mode: none }\nstore: { driver: sqlite, path: ${JSON.stringify(join(dir, 'db.sqlite'))} }\nworker: { enabled: false }\ntemplates:\n  demo: { provider: fake }\n`,
      env: {},
      cwd: dir,
      overrides: { port: 0, dataDir: dir },
    })
    let bootstrapped = false
    const running = await start({ config, log, onBootstrapKey: () => (bootstrapped = true) })
    try {
      assert.ok(
        lines.some((l) => /AUTHENTICATION IS OFF/.test(l) && /"level":40/.test(l)),
        lines.join(''),
      )
      assert.equal(bootstrapped, false, 'no admin key is made when auth is off')
      const r = await command(running.url, undefined, 'REQUEST_SESSION', { userId: 'anyone' })
      assert.equal(r.status, 200, r.text)
      // Input is still validated.
      assert.equal((await command(running.url, undefined, 'REQUEST_SESSION', { userId: 5 })).status, 400)
    } finally {
      await running.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
