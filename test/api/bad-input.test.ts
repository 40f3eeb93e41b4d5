/**
 * Bad input on the command endpoint and REST v1 (issue #2 "Must show"): every case gets the right 4xx
 * (or 503) code and the `{"error":{"code","message"}}` envelope, never a 500 or a stack trace, and
 * leaves the store exactly as it was. Runs the real server (start()) over a real socket against a
 * SQLite file and a fresh Postgres schema.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { dropSchemas } from '../helpers/pg.js'
import {
  assertNoStack,
  call,
  command,
  snapshot,
  startAppStub,
  startServer,
  STORES,
  waitFor,
  type Reply,
  type TestServer,
} from './helpers.js'

after(dropSchemas)

const ARENA = 'arena-requester-key-0123456789'
const PROXY = 'proxy-key-0123456789-abcdef'

interface Case {
  readonly name: string
  readonly run: () => Promise<Reply>
  readonly status: number
  readonly code: string
}

for (const kind of STORES) {
  describe(`bad input (${kind})`, () => {
    let app: Awaited<ReturnType<typeof startAppStub>>
    let s: TestServer
    let requesterB = ''
    let revoked = ''
    let aliceId = ''
    const cases: Case[] = []

    before(async () => {
      app = await startAppStub()
      const addr = JSON.stringify(app.url)
      s = await startServer(
        kind,
        `worker: { enabled: false }
templates:
  demo:
    provider: fake
    minFree: 1
    maxInstances: 10
    fake: { address: ${addr} }
  full:
    provider: fake
    maxInstances: 1
    whenFull: reject
    fake: { address: ${addr} }
  broken:
    provider: fake
    fake: { address: ${addr}, validationError: "the image does not exist" }
`,
        { ARENA_POOL_SERVICE_KEY: ARENA, PROXY_KEY: PROXY },
      )
      const mk = async (name: string, role: string) => {
        const r = await call(s.url, 'POST', '/api/v1/keys', { key: s.adminKey, body: { name, role } })
        assert.equal(r.status, 201, r.text)
        return r.json as { id: string; key: string }
      }
      requesterB = (await mk('portal-b', 'requester')).key
      const old = await mk('old-portal', 'requester')
      revoked = old.key
      assert.equal((await command(s.url, revoked, 'GET_STATUS', {})).status, 200)
      assert.equal((await call(s.url, 'DELETE', `/api/v1/keys/${old.id}`, { key: s.adminKey })).status, 200)

      const alice = await command(s.url, ARENA, 'REQUEST_RSTUDIO', { userId: 'alice' })
      assert.equal(alice.status, 200, alice.text)
      aliceId = alice.json.instanceId
      const filler = await command(s.url, ARENA, 'REQUEST_SESSION', { userId: 'filler', template: 'full' })
      assert.equal(filler.status, 200, filler.text)
      // Quiet: every background task (provisioning, probes, warm top-up) has finished.
      await waitFor('alice ready', async () => (await s.store.getInstance(aliceId))?.state === 'ready', 10_000)
      await s.running.pool!.drain()
    })
    after(async () => {
      await s?.close()
      await app?.close()
    })

    const json =
      (path: string, body: string, key: string | null = ARENA, ct = 'application/json') =>
      () =>
        call(s.url, 'POST', path, { key: key ?? undefined, body, headers: { 'content-type': ct } })
    const add = (name: string, status: number, code: string, run: () => Promise<Reply>) =>
      cases.push({ name, run, status, code })
    const huge = JSON.stringify({ command: 'GET_STATUS', payload: { pad: 'x'.repeat(10 * 1024 * 1024) } })
    const id = () => aliceId

    // --- the command protocol, at both addresses -------------------------------------------
    for (const path of ['/api/commands', '/']) {
      const cmd =
        (c: unknown, payload?: unknown, key: string | null = ARENA) =>
        () =>
          command(s.url, key ?? undefined, c, payload, path)
      const p = `POST ${path}`
      add(`${p} malformed JSON`, 400, 'INVALID_REQUEST', json(path, '{"command": "GET_STATUS", '))
      add(
        `${p} wrong content-type (text/plain)`,
        400,
        'INVALID_REQUEST',
        json(path, '{"command":"GET_STATUS"}', ARENA, 'text/plain'),
      )
      add(
        `${p} wrong content-type (form)`,
        400,
        'INVALID_REQUEST',
        json(path, 'command=GET_STATUS', ARENA, 'application/x-www-form-urlencoded'),
      )
      add(`${p} empty body`, 400, 'INVALID_REQUEST', json(path, ''))
      add(`${p} no body at all`, 400, 'INVALID_REQUEST', () => call(s.url, 'POST', path, { key: ARENA }))
      add(`${p} body is an array`, 400, 'INVALID_REQUEST', json(path, '[{"command":"GET_STATUS"}]'))
      add(`${p} body is null`, 400, 'INVALID_REQUEST', json(path, 'null'))
      add(
        `${p} __proto__ key in the body`,
        400,
        'INVALID_REQUEST',
        json(path, '{"command":"GET_STATUS","__proto__":{"admin":true}}'),
      )
      add(
        `${p} constructor.prototype in the body`,
        400,
        'INVALID_REQUEST',
        json(path, '{"command":"GET_STATUS","constructor":{"prototype":{"admin":true}}}'),
      )
      add(`${p} command: 5`, 400, 'INVALID_REQUEST', cmd(5, {}))
      add(`${p} command missing`, 400, 'INVALID_REQUEST', json(path, '{"payload":{}}'))
      add(`${p} payload: []`, 400, 'INVALID_REQUEST', cmd('GET_STATUS', []))
      add(`${p} payload: "x"`, 400, 'INVALID_REQUEST', cmd('GET_STATUS', 'x'))
      add(`${p} unknown command`, 400, 'UNKNOWN_COMMAND', cmd('DROP_TABLES', {}))
      add(`${p} lower-case command`, 400, 'UNKNOWN_COMMAND', cmd('request_rstudio', { userId: 'u1' }))
      for (const c of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'])
        add(`${p} command ${c}`, 400, 'UNKNOWN_COMMAND', cmd(c, {}))
      add(`${p} REQUEST_RSTUDIO userId: 123`, 400, 'INVALID_REQUEST', cmd('REQUEST_RSTUDIO', { userId: 123 }))
      add(`${p} REQUEST_RSTUDIO userId: null`, 400, 'INVALID_REQUEST', cmd('REQUEST_RSTUDIO', { userId: null }))
      add(`${p} REQUEST_RSTUDIO userId: ["a"]`, 400, 'INVALID_REQUEST', cmd('REQUEST_RSTUDIO', { userId: ['a'] }))
      add(`${p} REQUEST_RSTUDIO missing userId`, 400, 'INVALID_REQUEST', cmd('REQUEST_RSTUDIO', {}))
      add(`${p} REQUEST_RSTUDIO missing payload`, 400, 'INVALID_REQUEST', cmd('REQUEST_RSTUDIO'))
      add(`${p} REQUEST_RSTUDIO empty userId`, 400, 'INVALID_REQUEST', cmd('REQUEST_RSTUDIO', { userId: '' }))
      add(
        `${p} REQUEST_RSTUDIO control characters in userId`,
        400,
        'INVALID_REQUEST',
        cmd('REQUEST_RSTUDIO', { userId: 'a\nb' }),
      )
      add(
        `${p} REQUEST_RSTUDIO userId of 201 characters`,
        400,
        'INVALID_REQUEST',
        cmd('REQUEST_RSTUDIO', { userId: 'u'.repeat(201) }),
      )
      add(
        `${p} REQUEST_SESSION unknown template`,
        400,
        'INVALID_REQUEST',
        cmd('REQUEST_SESSION', { userId: 'u2', template: 'nope' }),
      )
      add(
        `${p} REQUEST_SESSION template of a wrong format`,
        400,
        'INVALID_REQUEST',
        cmd('REQUEST_SESSION', { userId: 'u2', template: '../demo' }),
      )
      add(
        `${p} REQUEST_SESSION template: 7`,
        400,
        'INVALID_REQUEST',
        cmd('REQUEST_SESSION', { userId: 'u2', template: 7 }),
      )
      add(
        `${p} REQUEST_SESSION at the cap with whenFull: reject`,
        503,
        'POOL_FULL',
        cmd('REQUEST_SESSION', { userId: 'late', template: 'full' }),
      )
      add(
        `${p} REQUEST_SESSION on an unavailable template`,
        503,
        'TEMPLATE_UNAVAILABLE',
        cmd('REQUEST_SESSION', { userId: 'u3', template: 'broken' }),
      )
      add(`${p} REQUEST_RSTUDIO with a proxy key`, 403, 'FORBIDDEN', cmd('REQUEST_RSTUDIO', { userId: 'u4' }, PROXY))
      add(
        `${p} GET_STATUS instanceId of a wrong format`,
        400,
        'INVALID_REQUEST',
        cmd('GET_STATUS', { instanceId: '../../etc/passwd', userId: 'alice' }),
      )
      add(
        `${p} GET_STATUS instanceId upper case`,
        400,
        'INVALID_REQUEST',
        cmd('GET_STATUS', { instanceId: 'A'.repeat(20), userId: 'alice' }),
      )
      add(
        `${p} GET_STATUS instanceId: 123`,
        400,
        'INVALID_REQUEST',
        cmd('GET_STATUS', { instanceId: 123, userId: 'alice' }),
      )
      add(
        `${p} GET_STATUS a provider id (i-0abc…)`,
        400,
        'INVALID_REQUEST',
        cmd('GET_STATUS', { instanceId: 'i-0abc1234def567890', userId: 'alice' }),
      )
      add(`${p} GET_STATUS requester without userId`, 400, 'INVALID_REQUEST', () =>
        command(s.url, ARENA, 'GET_STATUS', { instanceId: id() }, path),
      )
      add(`${p} GET_STATUS another user's instance`, 404, 'NOT_FOUND', () =>
        command(s.url, ARENA, 'GET_STATUS', { instanceId: id(), userId: 'bob' }, path),
      )
      add(`${p} GET_STATUS another requester's instance`, 404, 'NOT_FOUND', () =>
        command(s.url, requesterB, 'GET_STATUS', { instanceId: id(), userId: 'alice' }, path),
      )
      add(
        `${p} GET_STATUS unknown instance`,
        404,
        'NOT_FOUND',
        cmd('GET_STATUS', { instanceId: 'a'.repeat(20), userId: 'alice' }),
      )
      add(`${p} DELETE missing instanceId`, 400, 'INVALID_REQUEST', cmd('DELETE', {}))
      add(
        `${p} DELETE instanceId of a wrong format`,
        400,
        'INVALID_REQUEST',
        cmd('DELETE', { instanceId: 'x; drop table instances' }),
      )
      add(`${p} DELETE another requester's instance`, 403, 'FORBIDDEN', () =>
        command(s.url, requesterB, 'DELETE', { instanceId: id(), userId: 'alice' }, path),
      )
      add(`${p} DELETE naming another user`, 403, 'FORBIDDEN', () =>
        command(s.url, ARENA, 'DELETE', { instanceId: id(), userId: 'bob' }, path),
      )
      add(`${p} no key`, 401, 'UNAUTHORIZED', cmd('GET_STATUS', {}, null))
      add(`${p} wrong key`, 401, 'UNAUTHORIZED', cmd('GET_STATUS', {}, 'not-a-key-at-all'))
      add(
        `${p} wrong key of the right shape`,
        401,
        'UNAUTHORIZED',
        cmd('GET_STATUS', {}, `sp_${'a'.repeat(12)}_${'B'.repeat(43)}`),
      )
      add(`${p} revoked key`, 401, 'UNAUTHORIZED', () => command(s.url, revoked, 'GET_STATUS', {}, path))
      add(`${p} a key of 600 characters`, 401, 'UNAUTHORIZED', cmd('GET_STATUS', {}, 'k'.repeat(600)))
      add(`${p} Basic auth instead of a key`, 401, 'UNAUTHORIZED', () =>
        call(s.url, 'POST', path, {
          body: { command: 'GET_STATUS', payload: {} },
          headers: { authorization: `Basic ${Buffer.from(`x:${ARENA}`).toString('base64')}` },
        }),
      )
      add(`${p} empty x-api-key`, 401, 'UNAUTHORIZED', () =>
        call(s.url, 'POST', path, { body: { command: 'GET_STATUS', payload: {} }, headers: { 'x-api-key': '' } }),
      )
      add(`${p} malformed JSON without a key (auth comes first)`, 401, 'UNAUTHORIZED', json(path, '{"command":', null))
      add(`${p} a 10 MB body`, 413, 'TOO_LARGE', json(path, huge))
    }

    // --- REST v1 ---------------------------------------------------------------------------
    const rest =
      (
        method: string,
        path: string | (() => string),
        opts: { key?: string; body?: unknown; headers?: Record<string, string> } = { key: ARENA },
      ) =>
      () =>
        call(s.url, method, typeof path === 'string' ? path : path(), opts)
    add(
      'REST POST /api/v1/sessions userId: 123',
      400,
      'INVALID_REQUEST',
      rest('POST', '/api/v1/sessions', { key: ARENA, body: { userId: 123 } }),
    )
    add(
      'REST POST /api/v1/sessions missing userId',
      400,
      'INVALID_REQUEST',
      rest('POST', '/api/v1/sessions', { key: ARENA, body: {} }),
    )
    add(
      'REST POST /api/v1/sessions unknown property',
      400,
      'INVALID_REQUEST',
      rest('POST', '/api/v1/sessions', { key: ARENA, body: { userId: 'u5', admin: true } }),
    )
    add(
      'REST POST /api/v1/sessions body is an array',
      400,
      'INVALID_REQUEST',
      rest('POST', '/api/v1/sessions', { key: ARENA, body: [{ userId: 'u5' }] }),
    )
    add(
      'REST POST /api/v1/sessions malformed JSON',
      400,
      'INVALID_REQUEST',
      rest('POST', '/api/v1/sessions', {
        key: ARENA,
        body: '{"userId":',
        headers: { 'content-type': 'application/json' },
      }),
    )
    add(
      'REST POST /api/v1/sessions unknown template',
      400,
      'INVALID_REQUEST',
      rest('POST', '/api/v1/sessions', { key: ARENA, body: { userId: 'u5', template: 'nope' } }),
    )
    add(
      'REST POST /api/v1/sessions at the cap',
      503,
      'POOL_FULL',
      rest('POST', '/api/v1/sessions', { key: ARENA, body: { userId: 'u5', template: 'full' } }),
    )
    add(
      'REST POST /api/v1/sessions a 10 MB body',
      413,
      'TOO_LARGE',
      rest('POST', '/api/v1/sessions', { key: ARENA, body: huge, headers: { 'content-type': 'application/json' } }),
    )
    add(
      'REST POST /api/v1/sessions no key',
      401,
      'UNAUTHORIZED',
      rest('POST', '/api/v1/sessions', { body: { userId: 'u5' } }),
    )
    add(
      'REST GET instance id of a wrong format',
      400,
      'INVALID_REQUEST',
      rest('GET', '/api/v1/instances/..%2F..%2Fetc%2Fpasswd?userId=alice'),
    )
    add('REST GET instance id too short', 400, 'INVALID_REQUEST', rest('GET', '/api/v1/instances/abc?userId=alice'))
    add(
      'REST GET instance id upper case',
      400,
      'INVALID_REQUEST',
      rest('GET', `/api/v1/instances/${'A'.repeat(20)}?userId=alice`),
    )
    add('REST GET instance unknown', 404, 'NOT_FOUND', rest('GET', `/api/v1/instances/${'a'.repeat(20)}?userId=alice`))
    add("REST GET another requester's instance", 404, 'NOT_FOUND', () =>
      call(s.url, 'GET', `/api/v1/instances/${id()}?userId=alice`, { key: requesterB }),
    )
    add("REST GET another user's instance", 404, 'NOT_FOUND', () =>
      call(s.url, 'GET', `/api/v1/instances/${id()}?userId=bob`, { key: ARENA }),
    )
    add('REST GET instance, userId twice', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'GET', `/api/v1/instances/${id()}?userId=alice&userId=bob`, { key: ARENA }),
    )
    add('REST GET instance, unknown query parameter', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'GET', `/api/v1/instances/${id()}?userId=alice&debug=1`, { key: ARENA }),
    )
    add(
      'REST DELETE instance id of a wrong format',
      400,
      'INVALID_REQUEST',
      rest('DELETE', '/api/v1/instances/not-an-id'),
    )
    add("REST DELETE another requester's instance", 403, 'FORBIDDEN', () =>
      call(s.url, 'DELETE', `/api/v1/instances/${id()}?userId=alice`, { key: requesterB }),
    )
    add('REST GET instances ?limit=abc (admin)', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'GET', '/api/v1/instances?limit=abc', { key: s.adminKey }),
    )
    add('REST GET instances ?state=bogus (admin)', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'GET', '/api/v1/instances?state=ready,bogus', { key: s.adminKey }),
    )
    add('REST GET history ?from=yesterday (admin)', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'GET', '/api/v1/history?from=yesterday', { key: s.adminKey }),
    )
    add('REST GET history ?limit=-1 (admin)', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'GET', '/api/v1/history?limit=-1', { key: s.adminKey }),
    )
    add('REST GET history ?format=xml (admin)', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'GET', '/api/v1/history?format=xml', { key: s.adminKey }),
    )
    add('REST GET history, requester without userId', 400, 'INVALID_REQUEST', rest('GET', '/api/v1/history'))
    add('REST POST keys, bad name and role (admin)', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'POST', '/api/v1/keys', { key: s.adminKey, body: { name: 'a b', role: 'root' } }),
    )
    add('REST POST keys, duplicate name (admin)', 409, 'CONFLICT', () =>
      call(s.url, 'POST', '/api/v1/keys', { key: s.adminKey, body: { name: 'portal-b', role: 'requester' } }),
    )
    add('REST POST keys, the name of a config key (admin)', 409, 'CONFLICT', () =>
      call(s.url, 'POST', '/api/v1/keys', { key: s.adminKey, body: { name: 'arena', role: 'admin' } }),
    )
    add('REST DELETE keys, id of a wrong format (admin)', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'DELETE', '/api/v1/keys/..%2Fadmin', { key: s.adminKey }),
    )
    add('REST DELETE keys, unknown id (admin)', 404, 'NOT_FOUND', () =>
      call(s.url, 'DELETE', `/api/v1/keys/${'a'.repeat(12)}`, { key: s.adminKey }),
    )
    add('REST POST stop, unknown instance (admin)', 404, 'NOT_FOUND', () =>
      call(s.url, 'POST', `/api/v1/instances/${'b'.repeat(20)}/stop`, { key: s.adminKey }),
    )
    add('REST POST resume, instance not suspended (admin)', 409, 'CONFLICT', () =>
      call(s.url, 'POST', `/api/v1/instances/${id()}/resume`, { key: s.adminKey }),
    )
    for (const [method, path] of [
      ['GET', '/api/v1/keys'],
      ['POST', '/api/v1/keys'],
      ['DELETE', `/api/v1/keys/${'a'.repeat(12)}`],
      ['GET', '/api/v1/audit'],
      ['GET', '/api/v1/usage'],
      ['GET', '/api/v1/pool'],
      ['GET', '/api/v1/pool/queue'],
      ['GET', '/api/v1/instances'],
      ['POST', '/api/v1/instances/ID/stop'],
      ['POST', '/api/v1/instances/ID/restart'],
      ['POST', '/api/v1/instances/ID/suspend'],
      ['GET', '/metrics'],
      ['GET', '/api/v1/gateway/routes'],
      ['POST', '/api/v1/gateway/nonces'],
    ] as const) {
      const body =
        method === 'POST' && path === '/api/v1/keys'
          ? { name: 'mine', role: 'admin' }
          : method === 'POST'
            ? {}
            : undefined
      add(`requester key: ${method} ${path}`, 403, 'FORBIDDEN', () =>
        call(s.url, method, path.replace('ID', id()), { key: ARENA, body }),
      )
    }
    add('proxy key: POST /api/v1/keys', 403, 'FORBIDDEN', () =>
      call(s.url, 'POST', '/api/v1/keys', { key: PROXY, body: { name: 'mine', role: 'admin' } }),
    )
    add('proxy key: GET /api/v1/history', 403, 'FORBIDDEN', () => call(s.url, 'GET', '/api/v1/history', { key: PROXY }))
    add('REST no key: GET /api/v1/instances', 401, 'UNAUTHORIZED', () => call(s.url, 'GET', '/api/v1/instances'))
    add('REST revoked key: GET /api/v1/templates', 401, 'UNAUTHORIZED', () =>
      call(s.url, 'GET', '/api/v1/templates', { key: revoked }),
    )
    add('/metrics without a key', 401, 'UNAUTHORIZED', () => call(s.url, 'GET', '/metrics'))
    add('progress callback without a token', 401, 'UNAUTHORIZED', () =>
      call(s.url, 'POST', `/api/v1/instances/${id()}/progress`, { body: { progress: 50 } }),
    )
    add('progress callback with a wrong token', 401, 'UNAUTHORIZED', () =>
      call(s.url, 'POST', `/api/v1/instances/${id()}/progress`, { key: 'wrong-token', body: { progress: 50 } }),
    )
    add('progress callback, progress: 150', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'POST', `/api/v1/instances/${id()}/progress`, { key: 'wrong-token', body: { progress: 150 } }),
    )
    for (const [what, address] of [
      ['a host with a space', { host: 'a b', port: 20001 }],
      ['port 0', { host: 'node1', port: 0 }],
      ['port 65536', { host: 'node1', port: 65536 }],
      ['an unknown field', { host: 'node1', port: 20001, user: 'root' }],
      ['no port', { host: 'node1' }],
    ] as const)
      add(`progress callback, address with ${what}`, 400, 'INVALID_REQUEST', () =>
        call(s.url, 'POST', `/api/v1/instances/${id()}/progress`, {
          key: 'wrong-token',
          body: { progress: 50, address },
        }),
      )
    add('progress callback, id of a wrong format', 400, 'INVALID_REQUEST', () =>
      call(s.url, 'POST', '/api/v1/instances/zz/progress', { key: 'wrong-token', body: { progress: 10 } }),
    )
    add('unknown route', 404, 'NOT_FOUND', () => call(s.url, 'GET', '/api/v1/nothing-here', { key: ARENA }))
    add('GET on the command endpoint', 404, 'NOT_FOUND', () => call(s.url, 'GET', '/api/commands', { key: ARENA }))

    test('every case: the right code, the envelope, no stack trace, the store unchanged', async () => {
      const before = await snapshot(s.store)
      const failures: string[] = []
      for (const c of cases) {
        let r: Reply
        try {
          r = await c.run()
        } catch (err) {
          failures.push(`${c.name}: request failed: ${(err as Error).message}`)
          continue
        }
        await s.running.pool!.drain()
        const problems: string[] = []
        if (r.status !== c.status) problems.push(`status ${r.status}, want ${c.status}`)
        if (!r.json || typeof r.json.error !== 'object') problems.push('no error envelope')
        else {
          if (r.json.error.code !== c.code) problems.push(`code ${r.json.error.code}, want ${c.code}`)
          if (typeof r.json.error.message !== 'string' || !r.json.error.message) problems.push('no message')
          if (Object.keys(r.json).length !== 1) problems.push(`extra top-level keys ${Object.keys(r.json)}`)
        }
        if (!String(r.headers['content-type']).startsWith('application/json'))
          problems.push(`content-type ${r.headers['content-type']}`)
        try {
          assertNoStack(r.text)
        } catch (err) {
          problems.push((err as Error).message)
        }
        if (c.status === 401 && r.headers['www-authenticate'] !== 'Bearer') problems.push('no WWW-Authenticate: Bearer')
        if (c.code === 'POOL_FULL' && !/^\d+$/.test(String(r.headers['retry-after']))) problems.push('no Retry-After')
        // Someone else's instance never shows up in an answer.
        if (r.status >= 400 && r.text.includes(aliceId) && !c.name.includes('progress'))
          problems.push('the instance id leaked')
        if (r.status >= 400 && /filler|\/s\//.test(r.text)) problems.push('an owner or a session URL leaked')
        const now = await snapshot(s.store)
        if (now !== before) problems.push('the store changed')
        if (problems.length) failures.push(`${c.name}: ${problems.join('; ')} — ${r.text.slice(0, 200)}`)
      }
      assert.ok(cases.length > 150, `only ${cases.length} cases`)
      assert.deepEqual(failures, [])
    })

    test('a requester sees only its own users’ instances in lists', async () => {
      const mine = await command(s.url, ARENA, 'GET_STATUS', {})
      assert.equal(mine.status, 200)
      assert.ok(mine.json.instances.includes(aliceId))
      for (const payload of [{}, { userId: 'alice' }]) {
        const theirs = await command(s.url, requesterB, 'GET_STATUS', payload)
        assert.equal(theirs.status, 200)
        assert.deepEqual(theirs.json.instances, [], `GET_STATUS ${JSON.stringify(payload)} by another requester`)
      }
      const sessions = await call(s.url, 'GET', '/api/v1/sessions?userId=alice', { key: requesterB })
      assert.equal(sessions.status, 200)
      assert.deepEqual(sessions.json.sessions, [])
      const history = await call(s.url, 'GET', '/api/v1/history?userId=alice', { key: requesterB })
      assert.equal(history.status, 200)
      assert.deepEqual(history.json.history, [])
    })
  })
}
