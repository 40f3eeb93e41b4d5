/**
 * The header list sent upstream (gateway/headers.ts). A request forwarded twice — a shared pool's
 * retry on another instance after the first one died (issue 14) — must carry the client's fields
 * once and our Host and X-Forwarded-* once: undici refuses a list with two Host fields, which
 * turned every such retry into a 502.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildRequestHeaders, scanRequestHeaders, type ForwardContext } from '../../src/gateway/headers.js'
import type { CompiledRoute } from '../../src/gateway/route-table.js'

function context(heads: ForwardContext['heads'], targetHost: string): ForwardContext {
  return {
    route: { entry: { hostHeader: 'target' }, targetHost } as unknown as CompiledRoute,
    prefix: '/a/api',
    path: '/table.csv',
    strip: true,
    heads,
    clientIp: '127.0.0.1',
    proto: 'http',
    host: 'pool.example',
    priorForwardedFor: undefined,
    cookie: undefined,
    cookieName: 'sp',
    upstream: ['x-forwarded-user', 'analyst'],
  }
}

function count(list: readonly string[], name: string): number {
  let n = 0
  for (let i = 0; i < list.length; i += 2) if (list[i]!.toLowerCase() === name) n++
  return n
}

test('a request forwarded again (a retry on another instance) carries each field once', () => {
  const heads = scanRequestHeaders(['Host', 'pool.example', 'Accept', 'text/csv', 'X-Forwarded-User', 'mallory'])
  const first = buildRequestHeaders(context(heads, '10.0.0.1:8888'), false, false)
  const again = buildRequestHeaders(context(heads, '10.0.0.2:8888'), false, false)
  for (const list of [first, again]) {
    for (const name of ['host', 'accept', 'x-forwarded-user', 'x-forwarded-for', 'x-forwarded-prefix'])
      assert.equal(count(list, name), 1, `${name} once in ${JSON.stringify(list)}`)
    assert.equal(list[list.indexOf('x-forwarded-user') + 1], 'analyst', 'our identity, not the client’s')
  }
  assert.equal(again[again.indexOf('host') + 1], '10.0.0.2:8888', 'the retry names its own instance')
  assert.equal(first[first.indexOf('host') + 1], '10.0.0.1:8888')
})
