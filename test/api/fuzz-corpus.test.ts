/**
 * The fuzz corpus of issue 9 item 8, kept as a test on both stores: every request the issue quotes
 * (each gave a 5xx, or worse, an admin key), plus generated variants (every id-carrying query
 * parameter with every unsafe character, out-of-range epochs on every time parameter, a duplicate of
 * every key of every JSON body, lone surrogates, random query text from fast-check). Asserts no 5xx,
 * the error envelope, no stack trace, and the store unchanged. Real server (start()) on a real socket.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import fc from 'fast-check'
import { findJsonProblem } from '../../src/api/json-body.js'
import { dropSchemas } from '../helpers/pg.js'
import {
  assertNoStack,
  call,
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
const NONCE = 'n'.repeat(24)

test('findJsonProblem: duplicates per object after unescaping, lone surrogates, NUL; valid JSON passes', () => {
  assert.match(findJsonProblem('{"role":"requester","role":"admin"}') ?? '', /duplicate key "role"/)
  assert.match(findJsonProblem('{"role":"requester","\\u0072ole":"admin"}') ?? '', /duplicate key "role"/)
  assert.match(findJsonProblem('{"a":{"b":1,"b":2}}') ?? '', /duplicate key "b"/)
  assert.match(findJsonProblem('[{"a":1},{"x":[1,{"a":2,"a":3}]}]') ?? '', /duplicate key "a"/)
  assert.match(findJsonProblem('{"userId":"\\ud800"}') ?? '', /lone UTF-16 surrogate/)
  assert.match(findJsonProblem('{"userId":"x\\udc00"}') ?? '', /lone UTF-16 surrogate/)
  assert.match(findJsonProblem('{"userId":"\\u0000"}') ?? '', /NUL/)
  for (const ok of [
    '{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}',
    '{"s":"\\ud83d\\ude00 \\"a\\":1,\\"a\\":2"}',
    '{"a":"}","b":"{","c":","}',
    '[]',
    '"x"',
    '{}',
    '{"a":[],"b":{}}',
    '{"k":"v\\\\","k2":"\\\\"}',
  ]) {
    assert.equal(findJsonProblem(ok), undefined, ok)
  }
  // Whatever JSON.parse accepts, the scanner agrees with a reference on whether a key repeats.
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      const text = JSON.stringify(v)
      assert.equal(findJsonProblem(text)?.startsWith('duplicate') ?? false, false)
    }),
    { numRuns: 300 },
  )
})

for (const kind of STORES) {
  describe(`fuzz corpus (${kind})`, () => {
    let app: Awaited<ReturnType<typeof startAppStub>>
    let s: TestServer
    let aliceId = ''

    before(async () => {
      app = await startAppStub()
      s = await startServer(
        kind,
        `worker: { enabled: false }\ntemplates:\n  demo:\n    provider: fake\n    minFree: 1\n    fake: { address: ${JSON.stringify(app.url)} }\n`,
        { ARENA_POOL_SERVICE_KEY: ARENA, PROXY_KEY: PROXY },
      )
      const r = await call(s.url, 'POST', '/api/v1/sessions', { key: ARENA, body: { userId: 'alice' } })
      assert.equal(r.status, r.json.state === 'ready' ? 200 : 202, r.text)
      aliceId = r.json.instanceId
      await waitFor('alice ready', async () => (await s.store.getInstance(aliceId))?.state === 'ready', 10_000)
      await s.running.pool!.drain()
    })
    after(async () => {
      await s?.close()
      await app?.close()
    })

    const raw = (method: string, path: string, key: string, body?: string) => () =>
      call(s.url, method, path, {
        key,
        ...(body !== undefined ? { body, headers: { 'content-type': 'application/json' } } : {}),
      })

    test('the quoted requests: 400 INVALID_REQUEST, no 5xx, the store unchanged', async () => {
      const admin = s.adminKey
      const quoted: [string, () => Promise<Reply>][] = [
        ['GET usage?from=99999999999999999999', raw('GET', '/api/v1/usage?from=99999999999999999999', admin)],
        ['GET usage?to=99999999999999999999', raw('GET', '/api/v1/usage?to=99999999999999999999', admin)],
        ['GET history?to= out of range', raw('GET', '/api/v1/history?to=9223372036854775808', admin)],
        ['GET history?from= out of range', raw('GET', '/api/v1/history?from=99999999999999999999', admin)],
        ['GET sessions?userId=%00', raw('GET', '/api/v1/sessions?userId=%00', ARENA)],
        ['GET history?userId=%00', raw('GET', '/api/v1/history?userId=%00', admin)],
        ['GET instances?userId=%00', raw('GET', '/api/v1/instances?userId=%00', admin)],
        [
          'POST gateway/nonces expiresAt 1e300',
          raw('POST', '/api/v1/gateway/nonces', PROXY, `{"nonce":"${NONCE}","expiresAt":1e300}`),
        ],
        [
          'POST keys with role twice',
          raw('POST', '/api/v1/keys', admin, '{"name":"dup-role","role":"requester","role":"admin"}'),
        ],
        ['POST sessions with a lone surrogate', raw('POST', '/api/v1/sessions', ARENA, '{"userId":"\\ud800"}')],
        [
          'POST command with a lone surrogate',
          raw('POST', '/api/commands', ARENA, '{"command":"REQUEST_SESSION","payload":{"userId":"a\\udfff"}}'),
        ],
      ]
      const before = await snapshot(s.store)
      const failures: string[] = []
      for (const [name, run] of quoted) {
        const r = await run()
        if (r.status !== 400 || r.json?.error?.code !== 'INVALID_REQUEST')
          failures.push(`${name}: ${r.status} ${r.text.slice(0, 200)}`)
        assertNoStack(r.text)
      }
      assert.deepEqual(failures, [])
      assert.equal(await snapshot(s.store), before)
      assert.equal(
        (await s.store.listKeys()).some((k) => k.name === 'dup-role'),
        false,
        'no key made from a duplicate-key body',
      )
    })

    test('generated variants: no 5xx, the envelope, no stack, the store unchanged', async () => {
      const admin = s.adminKey
      const cases: [string, () => Promise<Reply>][] = []
      const unsafe = [
        '%00',
        'a%00b',
        '%01',
        '%1F',
        '%7F',
        '%C2%80',
        '%C2%9F',
        'x%0Ay',
        '%0D%0A',
        '%ED%A0%80',
        '%EF%BF%BF%00',
      ]
      const idQueries: [string, string][] = [
        ['/api/v1/sessions?userId=', ARENA],
        ['/api/v1/history?userId=', admin],
        ['/api/v1/history?template=', admin],
        ['/api/v1/history?instanceId=', admin],
        ['/api/v1/history?reason=', admin],
        ['/api/v1/instances?userId=', admin],
        ['/api/v1/instances?template=', admin],
        ['/api/v1/instances?state=', admin],
        [`/api/v1/instances/${aliceId}?userId=`, ARENA],
        ['/api/v1/audit?instanceId=', admin],
      ]
      for (const [path, key] of idQueries)
        for (const u of unsafe) cases.push([`GET ${path}${u}`, raw('GET', path + u, key)])
      for (const u of unsafe) {
        cases.push([`GET instances/${u}`, raw('GET', `/api/v1/instances/${u}`, admin)])
        cases.push([
          `DELETE instances/${aliceId}?userId=${u}`,
          raw('DELETE', `/api/v1/instances/${aliceId}?userId=${u}`, ARENA),
        ])
        cases.push([`DELETE keys/${u}`, raw('DELETE', `/api/v1/keys/${u}`, admin)])
        cases.push([`GET instances?${u}=1 (unsafe key)`, raw('GET', `/api/v1/instances?${u}=1`, admin)])
      }
      const epochs = [
        '99999999999999999999',
        '9223372036854775807',
        '9223372036854775808',
        '253402300800000',
        '1e300',
        '-1',
        '-99999999999999999999',
        '+275760-09-13T00:00:00.001Z',
        '-271821-04-20T00:00:00.000Z',
        '0x10',
        'Infinity',
        'NaN',
        '1'.repeat(40),
      ]
      for (const e of epochs) {
        for (const p of ['from', 'to']) {
          cases.push([`GET usage?${p}=${e}`, raw('GET', `/api/v1/usage?${p}=${encodeURIComponent(e)}`, admin)])
          cases.push([`GET history?${p}=${e}`, raw('GET', `/api/v1/history?${p}=${encodeURIComponent(e)}`, admin)])
        }
        cases.push([`GET history?limit=${e}`, raw('GET', `/api/v1/history?limit=${encodeURIComponent(e)}`, admin)])
        cases.push([`GET history?offset=${e}`, raw('GET', `/api/v1/history?offset=${encodeURIComponent(e)}`, admin)])
      }
      for (const n of ['1e300', '-1', '1.5', '9007199254740993', '253402300800000', '1e21', '"1"', 'null']) {
        cases.push([
          `POST nonces expiresAt ${n}`,
          raw('POST', '/api/v1/gateway/nonces', PROXY, `{"nonce":"${NONCE}","expiresAt":${n}}`),
        ])
        cases.push([
          `POST activity at ${n}`,
          raw('POST', '/api/v1/gateway/activity', PROXY, `{"entries":[{"id":"${aliceId}","at":${n}}]}`),
        ])
        cases.push([
          `POST progress ${n}`,
          raw('POST', `/api/v1/instances/${aliceId}/progress`, 'wrong-token', `{"progress":${n}}`),
        ])
      }
      // A duplicate of every key of every JSON body the API takes, first and last value swapped.
      const bodies: [string, string, Record<string, unknown>][] = [
        ['/api/v1/keys', admin, { name: 'fuzz-key', role: 'requester' }],
        ['/api/v1/sessions', ARENA, { userId: 'fuzz-user', template: 'demo' }],
        ['/api/commands', ARENA, { command: 'REQUEST_SESSION', payload: { userId: 'fuzz-user' } }],
        ['/', ARENA, { command: 'DELETE', payload: { instanceId: aliceId, userId: 'alice' } }],
        ['/api/v1/gateway/nonces', PROXY, { nonce: NONCE, expiresAt: Date.now() + 60_000 }],
        ['/api/v1/gateway/activity', PROXY, { entries: [] }],
      ]
      for (const [path, key, body] of bodies) {
        for (const k of Object.keys(body)) {
          const text = JSON.stringify(body)
          cases.push([
            `POST ${path} with "${k}" twice`,
            raw('POST', path, key, `${text.slice(0, -1)},${JSON.stringify(k)}:${JSON.stringify(body[k])}}`),
          ])
        }
      }
      cases.push([
        'POST command, payload.userId twice',
        raw('POST', '/api/commands', ARENA, '{"command":"REQUEST_SESSION","payload":{"userId":"x","userId":"alice"}}'),
      ])
      cases.push([
        'POST command, escaped duplicate command',
        raw('POST', '/api/commands', ARENA, '{"command":"GET_STATUS","\\u0063ommand":"DELETE","payload":{}}'),
      ])
      for (const sur of ['\\ud800', '\\udbff', '\\udc00', '\\udfff', 'a\\ud800b', '\\udc00\\ud800', '\\ud800\\ud800']) {
        cases.push([`POST sessions userId "${sur}"`, raw('POST', '/api/v1/sessions', ARENA, `{"userId":"${sur}"}`)])
        cases.push([
          `POST keys name "${sur}"`,
          raw('POST', '/api/v1/keys', admin, `{"name":"${sur}","role":"requester"}`),
        ])
        cases.push([
          `POST progress message "${sur}"`,
          raw('POST', `/api/v1/instances/${aliceId}/progress`, 'wrong-token', `{"progress":1,"message":"${sur}"}`),
        ])
      }
      for (const c of ['\\u0000', '\\u0001', '\\u001f', '\\u007f', 'a\\nb', '\\t']) {
        cases.push([`POST sessions userId with ${c}`, raw('POST', '/api/v1/sessions', ARENA, `{"userId":"${c}"}`)])
        cases.push([
          `POST command GET_STATUS userId with ${c}`,
          raw(
            'POST',
            '/api/commands',
            ARENA,
            `{"command":"GET_STATUS","payload":{"instanceId":"${aliceId}","userId":"${c}"}}`,
          ),
        ])
      }
      // Random query text (fast-check, a fixed seed so a failure repeats) on every id-carrying parameter.
      const texts = fc.sample(fc.string({ unit: 'binary', maxLength: 30 }), { numRuns: 60, seed: 9 })
      for (const [i, t] of texts.entries()) {
        const [path, key] = idQueries[i % idQueries.length]!
        cases.push([
          `GET ${path}<random ${JSON.stringify(t)}>`,
          raw('GET', path + encodeURIComponent(t.replace(/[\ud800-\udfff]/g, '')), key),
        ])
      }

      const before = await snapshot(s.store)
      const failures: string[] = []
      for (const [name, run] of cases) {
        const r = await run()
        await s.running.pool!.drain()
        if (r.status >= 500) failures.push(`${name}: ${r.status} ${r.text.slice(0, 160)}`)
        else if (r.status >= 400 && typeof r.json?.error?.code !== 'string')
          failures.push(`${name}: no envelope: ${r.status} ${r.text.slice(0, 160)}`)
        try {
          assertNoStack(r.text)
        } catch (err) {
          failures.push(`${name}: ${(err as Error).message}`)
        }
      }
      assert.ok(cases.length > 300, `only ${cases.length} cases`)
      assert.deepEqual(failures, [])
      assert.equal(await snapshot(s.store), before, 'the store changed')
    })

    test('a control character in a header is refused before the API, never 5xx', async () => {
      const reply = await new Promise<string>((resolve, reject) => {
        const u = new URL(s.url)
        const sock = connect(Number(u.port), u.hostname, () =>
          sock.write(
            `GET /api/v1/templates HTTP/1.1\r\nhost: x\r\nx-api-key: ${ARENA}\u0000\r\nconnection: close\r\n\r\n`,
          ),
        )
        let out = ''
        sock.on('data', (d) => (out += d.toString('latin1')))
        sock.on('end', () => resolve(out))
        sock.on('error', reject)
      })
      assert.match(reply, /^HTTP\/1\.1 4\d\d /)
    })

    test('a well-formed surrogate pair is still a valid user id', async () => {
      const r = await call(s.url, 'POST', '/api/v1/sessions', {
        key: ARENA,
        body: '{"userId":"\\ud83d\\ude00-user"}',
        headers: { 'content-type': 'application/json' },
      })
      assert.equal(r.status, r.json.state === 'ready' ? 200 : 202, r.text)
      const found = await call(s.url, 'GET', `/api/v1/sessions?userId=${encodeURIComponent('\u{1F600}-user')}`, {
        key: ARENA,
      })
      assert.equal(found.status, 200)
      assert.equal(found.json.sessions.length, 1)
    })
  })
}
