/**
 * The OpenAPI document as a client generator reads it (issue 17, "API for builders"): Redocly's
 * recommended rules pass with no error or warning, every operation has an operationId and a success
 * response, the table in src/api/operations.ts and the routes agree both ways, and real responses
 * match the documented schemas (so the document cannot drift from what the server sends).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { OPERATIONS } from '../../src/api/operations.js'
import { AssignmentSchema, ErrorEnvelope, InstanceSchema, SessionGrant } from '../../src/api/schemas.js'
import { call, command, startAppStub, startServer, waitFor, type TestServer } from './helpers.js'

const ARENA = 'arena-requester-key-0123456789'
const PROXY = 'proxy-key-0123456789-abcdef'
const REFS = [InstanceSchema, SessionGrant, AssignmentSchema, ErrorEnvelope] as TSchema[]
const redocly = fileURLToPath(new URL('../../node_modules/.bin/redocly', import.meta.url))

type Doc = { paths: Record<string, Record<string, { operationId?: string; responses: Record<string, unknown> }>> }

describe('the OpenAPI document', () => {
  let app: Awaited<ReturnType<typeof startAppStub>>
  let s: TestServer
  let doc: Doc
  const dir = mkdtempSync(join(tmpdir(), 'sp-openapi-'))

  before(async () => {
    app = await startAppStub()
    s = await startServer(
      'sqlite',
      `worker: { interval: 1h }
templates:
  demo:
    provider: fake
    minFree: 1
    fake: { address: ${JSON.stringify(app.url)} }
`,
      { ARENA_POOL_SERVICE_KEY: ARENA, PROXY_KEY: PROXY },
    )
    doc = (await call(s.url, 'GET', '/api/v1/openapi.json')).json as Doc
    await waitFor(
      'a warm demo instance',
      async () => (await s.store.listInstances({ template: 'demo', assigned: false, states: ['ready'] })).length === 1,
      10_000,
    )
  })
  after(async () => {
    await s?.close()
    await app?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  test("passes Redocly's recommended rules with no error and no warning", () => {
    const file = join(dir, 'openapi.json')
    writeFileSync(file, JSON.stringify(doc))
    const r = spawnSync(redocly, ['lint', file, '--format=summary'], { encoding: 'utf8', timeout: 60_000 })
    const out = `${r.stdout}${r.stderr}`
    assert.equal(r.status, 0, out)
    assert.doesNotMatch(out, /warning|error/i, out)
  })

  test('every operation has a unique operationId and a success response; the table has no stale entry', () => {
    const seen = new Set<string>()
    const documented = new Set<string>()
    for (const [path, ops] of Object.entries(doc.paths))
      for (const [method, op] of Object.entries(ops)) {
        const key = `${method.toUpperCase()} ${path}`
        documented.add(key)
        assert.ok(OPERATIONS[key], `${key} is missing from src/api/operations.ts`)
        assert.equal(op.operationId, OPERATIONS[key].operationId)
        assert.ok(!seen.has(op.operationId!), `operationId ${op.operationId} used twice`)
        seen.add(op.operationId!)
        assert.ok(
          Object.keys(op.responses).some((c) => c.startsWith('2')),
          `${key} declares a success response`,
        )
      }
    for (const key of Object.keys(OPERATIONS)) assert.ok(documented.has(key), `${key} is in the table, not the API`)
    assert.ok(documented.has('GET /api/v1/gateway/routes'), 'the route feed (SSE) is documented')
  })

  test('real responses have the documented status and match the documented schema', async () => {
    const admin = s.adminKey
    const check = (key: string, status: number, body: unknown) => {
      const op = OPERATIONS[key]!
      const allowed = [op.status ?? 200, ...Object.keys(op.also ?? {}).map(Number)]
      assert.ok(allowed.includes(status), `${key} answered ${status}`)
      if (op.body) assert.ok(Value.Check(op.body, REFS, body), `${key}: ${JSON.stringify(body).slice(0, 300)}`)
    }
    const grant = await command(s.url, ARENA, 'REQUEST_SESSION', { userId: 'alice', template: 'demo' })
    check('POST /api/commands', grant.status, grant.json)
    const id = grant.json.instanceId as string
    const list = await command(s.url, ARENA, 'GET_STATUS', {})
    check('POST /api/commands', list.status, list.json)
    const rest = await call(s.url, 'POST', '/api/v1/sessions', { key: ARENA, body: { userId: 'bob' } })
    check('POST /api/v1/sessions', rest.status, rest.json)
    const created = await call(s.url, 'POST', '/api/v1/keys', { key: admin, body: { name: 'ci', role: 'requester' } })
    check('POST /api/v1/keys', created.status, created.json)
    for (const [key, path, who] of [
      ['GET /healthz', '/healthz', undefined],
      ['GET /readyz', '/readyz', undefined],
      ['GET /api/v1/sessions', '/api/v1/sessions?userId=alice', ARENA],
      ['GET /api/v1/instances', '/api/v1/instances', PROXY],
      ['GET /api/v1/instances/{id}', `/api/v1/instances/${id}?userId=alice`, ARENA],
      ['GET /api/v1/templates', '/api/v1/templates', ARENA],
      ['GET /api/v1/pool', '/api/v1/pool', PROXY],
      ['GET /api/v1/pool/queue', '/api/v1/pool/queue', PROXY],
      ['GET /api/v1/history', '/api/v1/history', admin],
      ['GET /api/v1/usage', '/api/v1/usage', admin],
      ['GET /api/v1/audit', `/api/v1/audit?instanceId=${id}`, admin],
      ['GET /api/v1/keys', '/api/v1/keys', admin],
      ['GET /api/v1/homes', '/api/v1/homes', admin],
    ] as const) {
      const r = await call(s.url, 'GET', path, { key: who })
      check(key, r.status, r.json)
    }
    const metrics = await call(s.url, 'GET', '/metrics', { key: admin })
    assert.equal(metrics.status, 200)
    assert.match(String(metrics.headers['content-type']), /^text\/plain/)
    const restart = await call(s.url, 'POST', `/api/v1/instances/${id}/restart`, { key: admin })
    check('POST /api/v1/instances/{id}/restart', restart.status, restart.json)
    const del = await call(s.url, 'DELETE', `/api/v1/instances/${id}?userId=alice`, { key: ARENA })
    check('DELETE /api/v1/instances/{id}', del.status, del.json)
    const revoked = await call(s.url, 'DELETE', `/api/v1/keys/${created.json.id}`, { key: admin })
    check('DELETE /api/v1/keys/{id}', revoked.status, revoked.json)
  })

  test('the schema check itself rejects a response that does not match', () => {
    assert.ok(!Value.Check(OPERATIONS['GET /api/v1/instances']!.body!, REFS, { instances: [{ state: 3 }] }))
    assert.ok(!Value.Check(OPERATIONS['POST /api/v1/keys']!.body!, REFS, { id: 'x', name: 'n', role: 'r' }))
  })
})
