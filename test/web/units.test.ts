import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { loadConfig } from '../../src/config/load.js'
import { createTokenService } from '../../src/gateway/tokens.js'
import type { RouteEntry } from '../../src/domain/routes.js'
import { stateChart } from '../../src/web/chart.js'
import { esc, formatDuration } from '../../src/web/html.js'
import { groupsOf } from '../../src/web/oidc.js'
import { ownFilter } from '../../src/web/routes/events.js'
import { addressMatcher, isLoopback, SessionKit } from '../../src/web/session.js'

const tokens = createTokenService('a-secret-of-at-least-16-chars', { launchTtlMs: 60_000, cookieTtlMs: 3_600_000 })

function kit(yaml: string): SessionKit {
  const config = loadConfig({ text: yaml + '\ntemplates:\n  demo:\n    provider: fake\n', env: {}, cwd: '/tmp' })
  return new SessionKit({ tokens, secret: 'a-secret-of-at-least-16-chars', config })
}

describe('dashboard helpers', () => {
  it('follows next only to our own pages and session URLs', () => {
    const k = kit('server:\n  publicUrl: https://pool.example.org')
    const cases: [unknown, string][] = [
      ['/admin?x=1#h', '/admin?x=1#h'],
      ['/s/abcdefghijklmnopqrst/lab?a=b', '/s/abcdefghijklmnopqrst/lab?a=b'],
      ['https://pool.example.org/s/abcdefghijklmnopqrst/', '/s/abcdefghijklmnopqrst/'],
      ['https://evil.example/', '/'],
      ['https://pool.example.org.evil.example/', '/'],
      ['https://user@pool.example.org/', '/'],
      ['//evil.example/', '/'],
      ['/\\evil.example', '/'],
      ['/%0d%0aSet-Cookie:x', '/%0d%0aSet-Cookie:x'],
      ['/\r\nx', '/'],
      ['javascript:alert(1)', '/'],
      ['data:text/html,hi', '/'],
      ['', '/'],
      [undefined, '/'],
      [['/a'], '/'],
    ]
    for (const [next, want] of cases) assert.equal(k.safeNext(next), want, String(next))
  })

  it('follows next to session subdomains of our own gateway in subdomain mode', () => {
    const k = kit(
      'server:\n  publicUrl: https://pool.example.org\ngateway:\n  mode: subdomain\n  sessionDomain: s.example.org',
    )
    assert.equal(
      k.safeNext('https://abcdefghijklmnopqrst.s.example.org/tree'),
      'https://abcdefghijklmnopqrst.s.example.org/tree',
    )
    assert.equal(k.safeNext('http://abcdefghijklmnopqrst.s.example.org/'), '/', 'not downgraded to http')
    assert.equal(k.safeNext('https://evil.s.example.org/'), '/', 'not an instance id')
    assert.equal(k.safeNext('https://abcdefghijklmnopqrst.s.example.org.evil.example/'), '/')
    assert.equal(k.safeNext('https://abcdefghijklmnopqrst.evil.example/'), '/')
  })

  it('binds form tokens to the cookie, and seals login state with an expiry', () => {
    const k = kit('')
    const a = tokens.issueSession({ userId: 'a', admin: false, groups: [] })
    const b = tokens.issueSession({ userId: 'b', admin: false, groups: [] })
    assert.equal(k.checkCsrf(a, k.csrfFor(a)), true)
    assert.equal(k.checkCsrf(a, k.csrfFor(b)), false)
    assert.equal(k.checkCsrf(a, undefined), false)
    assert.equal(k.checkCsrf(a, ''), false)
    const sealed = k.seal({ state: 's' }, 60_000)
    assert.equal(k.unseal(sealed)?.state, 's')
    assert.equal(k.unseal(sealed.slice(0, -2) + 'AA'), undefined, 'tampered')
    assert.equal(k.unseal(k.seal({ state: 's' }, -1)), undefined, 'expired')
    assert.equal(k.sessionCookie('v').includes('Secure'), false)
    assert.match(kit('server:\n  publicUrl: https://x.example').sessionCookie('v'), /HttpOnly; SameSite=Lax; Secure$/)
  })

  it('matches trusted proxies by address, range and loopback', () => {
    const m = addressMatcher(['10.0.0.5', '192.168.0.0/16', 'fd00::/8', 'loopback', 'not-an-ip'])
    assert.equal(m('10.0.0.5'), true)
    assert.equal(m('10.0.0.6'), false)
    assert.equal(m('192.168.200.1'), true)
    assert.equal(m('fd12::1'), true)
    assert.equal(m('::1'), true)
    assert.equal(m('127.0.0.9'), true)
    assert.equal(m(''), false)
    assert.equal(addressMatcher([])('127.0.0.1'), false)
    // One grammar for every trusted-peer list (gateway/peers.ts): IPv4-mapped peers are unwrapped there.
    assert.equal(isLoopback('::ffff:127.0.0.1'), true)
    assert.equal(m('::ffff:10.0.0.5'), true)
  })

  it('draws the chart from samples, escapes, and says when there is nothing', () => {
    const now = 1_800_000_000_000
    const empty = stateChart([], now - 86_400_000, now)
    assert.match(empty, /No samples/)
    assert.doesNotMatch(empty, /<polygon/)
    const svg = stateChart(
      [
        { at: now - 3_600_000, template: 'a', state: 'ready', count: 3 },
        { at: now - 3_600_000, template: 'b', state: 'ready', count: 2 },
        { at: now - 3_000_000, template: 'a', state: 'starting', count: 1 },
        { at: now - 600_000, template: 'a', state: 'queued', count: 2 },
      ],
      now - 86_400_000,
      now,
    )
    assert.match(svg, /<polygon/)
    assert.match(svg, /Peak 5 instances/)
    assert.match(svg, /Latest sample: 0 ready, 0 starting, 0 provisioning, 2 queued/)
    assert.equal(
      (svg.match(/<polygon/g) ?? []).length,
      2,
      'one bucket (latest sample: starting) before, one (queued) at the end',
    )
    assert.match(svg, /role="img"/)
  })

  it('escapes and formats', () => {
    assert.equal(esc(`<a href="x">'&`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;')
    assert.equal(formatDuration(65_000), '1 min 05 s')
    assert.equal(formatDuration(3_900_000), '1 h 05 min')
    assert.deepEqual(groupsOf('a b,c'), ['a', 'b', 'c'])
    assert.deepEqual(groupsOf(['x', 3, '']), ['x'])
    assert.deepEqual(groupsOf(undefined), [])
  })
})

describe('dashboard live progress', () => {
  const route = (instanceId: string, ownerId: string | null, progress = 0): RouteEntry => ({
    instanceId,
    ownerId,
    template: 'demo',
    state: 'starting',
    address: null,
    pathMode: 'strip',
    hostHeader: 'target',
    progress,
    progressMessage: '',
    queuePosition: null,
    generation: 1,
    failureReason: null,
  })

  it("streams a user's own instances only, and removes one that leaves the table or changes hands", () => {
    const sent: unknown[] = []
    const push = ownFilter('alice', (m) => sent.push(m))
    push({ type: 'reset', routes: [route('a1', 'alice'), route('b1', 'bob'), route('a2', 'alice')] })
    assert.deepEqual(sent.splice(0), [
      {
        type: 'reset',
        instances: ['a1', 'a2'].map((id) => ({
          id,
          template: 'demo',
          state: 'starting',
          progress: 0,
          message: '',
          queuePosition: null,
        })),
      },
    ])
    push({ type: 'upsert', route: route('b1', 'bob', 50) })
    assert.deepEqual(sent.splice(0), [], "bob's progress is not shown to alice")
    push({ type: 'upsert', route: route('a1', 'alice', 40) })
    assert.equal((sent.splice(0)[0] as { instances: { progress: number }[] }).instances[0]!.progress, 40)
    push({ type: 'upsert', route: route('a1', 'carol') })
    assert.deepEqual(sent.splice(0), [{ type: 'remove', instanceId: 'a1' }], 'an instance that changes hands goes')
    push({ type: 'remove', instanceId: 'b1', reason: 'terminated' })
    assert.deepEqual(sent.splice(0), [], "bob's instance ending is not alice's news")
    push({ type: 'reset', routes: [] })
    assert.deepEqual(sent.splice(0), [
      { type: 'remove', instanceId: 'a2' },
      { type: 'reset', instances: [] },
    ])
  })
})
