/** The one grammar for trusted peers (gateway/peers.ts): every list and every user reads it the same way. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isLoopbackHost, peerProblems, peerSet } from '../../src/gateway/peers.js'
import { addressMatcher } from '../../src/web/session.js'

test('one matcher: addresses, ranges, loopback, IPv4-mapped forms on both sides', () => {
  const s = peerSet(['10.0.0.5', '192.168.0.0/16', 'fd00::/8', 'loopback', '::ffff:10.9.9.9'])
  for (const a of [
    '10.0.0.5',
    '::ffff:10.0.0.5',
    '192.168.3.4',
    'fd00::1',
    '127.0.0.2',
    '::1',
    '::ffff:127.0.0.1',
    '10.9.9.9',
  ])
    assert.equal(s.match(a), true, a)
  for (const a of ['10.0.0.6', '', 'not-an-ip', '172.16.0.1', 'fe80::1']) assert.equal(s.match(a), false, a)
  assert.equal(peerSet([]).empty, true)
  // The dashboard's trusted-header proxies use the same matcher.
  assert.equal(addressMatcher(['::ffff:10.9.9.9'])('10.9.9.9'), true)
})

test('loopback coverage and overlap with session networks', () => {
  assert.equal(peerSet(['loopback']).coversLoopback(), true)
  assert.equal(peerSet(['127.0.0.0/8']).coversLoopback(), true)
  assert.equal(peerSet(['0.0.0.0/0']).coversLoopback(), true, 'a range holding loopback')
  assert.equal(peerSet(['10.0.0.1']).coversLoopback(), false)
  assert.deepEqual(peerSet(['10.1.2.3', '192.168.0.1']).overlapping('10.0.0.0/8'), ['10.1.2.3'])
  assert.deepEqual(peerSet(['10.0.0.0/8']).overlapping('10.5.0.0/16'), ['10.0.0.0/8'])
  assert.deepEqual(peerSet(['127.0.0.1', 'loopback']).overlapping('loopback'), ['loopback', '127.0.0.1'])
})

test('problems name the entry; the public URL host test speaks the same grammar', () => {
  assert.deepEqual(peerProblems(['loopback', '10.0.0.0/8', 'lopback', '10.0.0.0/33', 'fd00::/129']), [
    '"lopback" is not an address, a CIDR range or the word loopback',
    '"10.0.0.0/33": the prefix length must be 0–32',
    '"fd00::/129": the prefix length must be 0–128',
  ])
  for (const h of ['localhost', '127.0.0.1', '127.1.2.3', '[::1]', '::1', '::ffff:127.0.0.1'])
    assert.equal(isLoopbackHost(h), true, h)
  for (const h of ['example.org', '10.0.0.1', '127.0.0.0/8', 'localhost.example.org'])
    assert.equal(isLoopbackHost(h), false, h)
})
