/** Session resolution from the path or the host (gateway/session-path.ts), alone. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { IncomingMessage } from 'node:http'
import type { Config } from '../../src/config/types.js'
import { stripBasePath } from '../../src/gateway/base-path.js'
import { launchToken, SessionPaths } from '../../src/gateway/session-path.js'

const ID = 'abcdefghijklmnopqrst'
const gw = (over: Partial<Config['gateway']> = {}) =>
  ({ mode: 'path', sessionDomain: null, ...over }) as unknown as Config['gateway']

test('path mode: /s/{id}/… is the session; the bare id gets its slash; anything else is not an id', () => {
  const p = new SessionPaths(gw(), 'http://gw.example')
  assert.deepEqual(p.resolve(`/s/${ID}/lab?x=1`, undefined), {
    kind: 'session',
    id: ID,
    prefix: `/s/${ID}`,
    rest: '/lab?x=1',
  })
  assert.deepEqual(p.resolve(`/s/${ID}`, undefined), { kind: 'redirect', location: `/s/${ID}/` })
  assert.deepEqual(p.resolve(`/s/${ID}?a=1`, undefined), { kind: 'redirect', location: `/s/${ID}/?a=1` })
  assert.deepEqual(p.resolve(`/s/${ID}x/`, undefined), { kind: 'bad-id' })
  assert.deepEqual(p.resolve('/s/ABCDEFGHIJKLMNOPQRST/', undefined), { kind: 'bad-id' }, 'ids are lowercase base32')
  assert.deepEqual(p.resolve('/s/short/', undefined), { kind: 'bad-id' })
  assert.equal(p.resolve('/api/v1/instances', undefined), null)
  assert.equal(p.resolve('/', undefined), null)
})

test('subdomain mode: the id is the host label; a path-mode link goes to the session origin', () => {
  const p = new SessionPaths(gw({ mode: 'subdomain', sessionDomain: 'Sessions.Example.org' }), 'https://gw.example.org')
  assert.deepEqual(p.resolve('/lab', `${ID}.sessions.example.org:8443`), {
    kind: 'session',
    id: ID,
    prefix: '',
    rest: '/lab',
  })
  assert.deepEqual(p.resolve('/', `x.${ID}.sessions.example.org`), { kind: 'bad-id' }, 'one label only')
  assert.deepEqual(p.resolve('/', 'nope.sessions.example.org'), { kind: 'bad-id' })
  assert.equal(p.resolve('/', 'gw.example.org'), null)
  const r = p.resolve(`/s/${ID}/lab?x=1`, 'gw.example.org')
  assert.equal(r?.kind, 'redirect')
  assert.match(
    (r as { location: string }).location,
    new RegExp(`^https://${ID}\\.sessions\\.example\\.org.*/lab\\?x=1$`, 'i'),
  )
})

test('the clean URL drops the launch token and the switch secret, keeps the rest of the query', () => {
  const p = new SessionPaths(gw(), 'http://gw.example/base', '/base')
  assert.equal(p.cleanUrl(ID, '/lab?sp_token=t&a=1'), `/base/s/${ID}/lab?a=1`)
  assert.equal(p.cleanUrl(ID, '/?sp_token=t'), `/base/s/${ID}/`)
  assert.equal(launchToken('/lab?a=1&sp_token=t.x'), 't.x')
  assert.equal(launchToken('/lab?a=1'), null)
  assert.equal(launchToken('/sp_token=x'), null, 'only in the query')
})

test('under a base path: the listener strips it; prefixes and redirects have it; session hosts and root probes pass', () => {
  const strip = (url: string, host?: string, p = new SessionPaths(gw(), 'http://gw.example/sp', '/sp')) => {
    const req = { url, headers: { host } } as unknown as IncomingMessage
    return [stripBasePath(req, '/sp', (h) => p.isSessionHost(h)), req.url]
  }
  assert.deepEqual(strip('/sp/api/v1/instances'), ['in', '/api/v1/instances'])
  assert.deepEqual(strip('/sp/'), ['in', '/'])
  assert.deepEqual(strip('/sp'), ['slash', '/sp'])
  assert.deepEqual(strip('/sp?x=1'), ['slash', '/sp?x=1'])
  assert.deepEqual(strip('/spx/'), ['outside', '/spx/'])
  assert.deepEqual(strip('/api/v1/instances'), ['outside', '/api/v1/instances'])
  assert.deepEqual(strip('/healthz'), ['in', '/healthz'])
  assert.deepEqual(strip('/metrics?x'), ['in', '/metrics?x'])
  const path = new SessionPaths(gw(), 'http://gw.example/sp', '/sp')
  assert.deepEqual(path.resolve(`/s/${ID}/lab`, undefined), {
    kind: 'session',
    id: ID,
    prefix: `/sp/s/${ID}`,
    rest: '/lab',
  })
  assert.deepEqual(path.resolve(`/s/${ID}`, undefined), { kind: 'redirect', location: `/sp/s/${ID}/` })
  // Subdomain mode: a session host serves at its root, not under the prefix; the main host has the prefix.
  const sub = new SessionPaths(
    gw({ mode: 'subdomain', sessionDomain: 's.example.org' }),
    'https://gw.example.org/sp',
    '/sp',
  )
  assert.deepEqual(strip('/lab', `${ID}.s.example.org`, sub), ['in', '/lab'])
  assert.deepEqual(strip('/sp/lab', `${ID}.s.example.org`, sub), ['in', '/sp/lab'], "the app's own paths")
  assert.deepEqual(strip('/lab', 'gw.example.org', sub), ['outside', '/lab'])
  assert.deepEqual(sub.resolve('/lab', `${ID}.s.example.org`), { kind: 'session', id: ID, prefix: '', rest: '/lab' })
})
