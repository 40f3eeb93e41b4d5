/** Session resolution from the path or the host (gateway/session-path.ts), alone. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Config } from '../../src/config/types.js'
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
  const p = new SessionPaths(gw(), 'http://gw.example/base/')
  assert.equal(p.cleanUrl(ID, '/lab?sp_token=t&a=1'), `/base/s/${ID}/lab?a=1`)
  assert.equal(p.cleanUrl(ID, '/?sp_token=t'), `/base/s/${ID}/`)
  assert.equal(launchToken('/lab?a=1&sp_token=t.x'), 't.x')
  assert.equal(launchToken('/lab?a=1'), null)
  assert.equal(launchToken('/sp_token=x'), null, 'only in the query')
})
