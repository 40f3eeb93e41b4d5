/**
 * The one cookie module (gateway/session-cookie.ts): the rules a browser would notice, the same
 * for the gateway and the dashboard.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { cookieValues, firstValid, MAX_VALUES, setCookie, withoutCookie } from '../../src/gateway/session-cookie.js'

const N = 'sp_session'

test('every value of the name, in the order the browser sent them (other paths or domains)', () => {
  assert.deepEqual(cookieValues(`${N}=a; other=1; ${N}=b`, N), ['a', 'b'])
  assert.deepEqual(cookieValues(`${N}=a;${N}=b`, N), ['a', 'b'], 'no space after the separator')
  assert.deepEqual(cookieValues(`  ${N}=a\t;\t${N}=b  `, N), ['a', 'b'], 'spaces and tabs around pairs')
  const many = Array.from({ length: 20 }, (_, i) => `${N}=v${i}`).join('; ')
  assert.equal(cookieValues(many, N).length, MAX_VALUES, 'a stuffed header is read only so far')
  assert.deepEqual(cookieValues(undefined, N), [])
  assert.deepEqual(cookieValues('', N), [])
})

test('names match exactly: prefixes, suffixes, case and a name inside a value are other cookies', () => {
  assert.deepEqual(cookieValues(`x${N}=a; ${N}x=b; SP_SESSION=c`, N), [])
  assert.deepEqual(cookieValues(`app=${N}=a`, N), [], 'our name inside another cookie’s value')
  assert.deepEqual(cookieValues(`app="x ${N}=a"`, N), [], 'after a space inside a quoted value')
})

test('quoted values are read without their quotes; empty and malformed values are skipped', () => {
  assert.deepEqual(cookieValues(`${N}="abc"`, N), ['abc'])
  assert.deepEqual(cookieValues(`${N}=; ${N}=""; ${N}=ok`, N), ['ok'])
  assert.deepEqual(cookieValues(`${N}=a b; ${N}=a\\b; ${N}=a,b; ${N}="a; ${N}=é; ${N}=ok`, N), ['ok'])
  // Never percent-decoded: what the browser holds is what is checked.
  assert.deepEqual(cookieValues(`${N}=a%2Eb`, N), ['a%2Eb'])
})

test('firstValid takes the first value that verifies', () => {
  const got = firstValid(`${N}=bad; ${N}=good; ${N}=good2`, N, (v) => (v.startsWith('good') ? v.length : undefined))
  assert.deepEqual(got, { claims: 4, value: 'good' })
  assert.equal(
    firstValid(`${N}=bad`, N, () => undefined),
    undefined,
  )
})

test('withoutCookie drops every copy of ours and keeps the rest as sent', () => {
  assert.equal(withoutCookie(`${N}=a`, N), undefined)
  assert.equal(withoutCookie(`${N}=a; app=1; ${N}=b;theme=dark`, N), 'app=1; theme=dark')
  assert.equal(withoutCookie(`x${N}=a; app=1`, N), `x${N}=a; app=1`, 'a longer name is not ours')
  assert.equal(withoutCookie('app=1', N), 'app=1')
  assert.equal(withoutCookie(undefined, N), undefined)
})

test('setCookie: HttpOnly, SameSite=Lax, Secure on https only', () => {
  assert.equal(
    setCookie(N, 'v', { maxAgeSeconds: 60, secure: false }),
    `${N}=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax`,
  )
  assert.match(
    setCookie(N, 'v', { maxAgeSeconds: 0, secure: true, path: '/login' }),
    /Path=\/login; Max-Age=0; .*; Secure$/,
  )
})
