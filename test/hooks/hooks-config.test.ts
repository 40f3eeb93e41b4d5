/**
 * `hooks:` configuration errors (docs/hooks.md): an unknown event and a missing program are
 * configuration errors in the schema's message style, with "did you mean"; `config check` lists them
 * and `serve` exits 2 on them; `config print` redacts the hooks' env values.
 */
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BIN, REPO } from '../helpers/server-process.js'

const dir = mkdtempSync(join(tmpdir(), 'sp-hooks-config-'))
after(() => rmSync(dir, { recursive: true, force: true }))
writeFileSync(join(dir, 'dns-hook.mjs'), '')

function cli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [BIN, ...args], {
    cwd: dir,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: dir, STUDIOPOOL_LOG_LEVEL: 'silent', ...env },
    timeout: 60_000,
  })
}

const BAD = `server: { dataDir: ./data }
templates:
  demo: { provider: fake, minFree: 0 }
hooks:
  - name: dns
    on: [session.redy, session.ended]
    command: [node, dns-hook.mjs]
  - name: notify
    on: [session.ended]
    command: [./dns-hok.mjs]
    templates: [dmeo]
  - name: pager
    on: [budget.exceeded]
    command: [no-such-pager-xyz, --now]
`

test('config check names each hook problem with its path; serve exits 2', () => {
  writeFileSync(join(dir, 'bad.yaml'), BAD)
  const r = cli(['config', 'check', 'bad.yaml'])
  assert.equal(r.status, 2, r.stderr)
  assert.equal(
    r.stderr,
    [
      `invalid configuration (${join(dir, 'bad.yaml')}):`,
      '  - /hooks/0/on/0: "session.redy" is not one of: session.ready, session.ended, budget.warning, budget.exceeded, budget.stop-scheduled, budget.stopped; did you mean "session.ready"?',
      '',
    ].join('\n'),
  )
  writeFileSync(join(dir, 'bad2.yaml'), BAD.replace('session.redy', 'session.ready'))
  const r2 = cli(['config', 'check', 'bad2.yaml'])
  assert.equal(r2.status, 2, r2.stderr)
  assert.deepEqual(r2.stderr.trim().split('\n').slice(1), [
    '  - /hooks/1/templates/0: no template named "dmeo"; did you mean "demo"?',
    '  - /hooks/1/command/0: program ./dns-hok.mjs not found or not executable; did you mean "dns-hook.mjs"?',
    `  - /hooks/2/command/0: program "no-such-pager-xyz" is not on PATH (${process.env.PATH ?? ''}); give a path or install it`,
  ])
  const serve = cli(['serve', '--port', '0', '--config', 'bad2.yaml'])
  assert.equal(serve.status, 2)
  assert.match(serve.stderr, /\/hooks\/2\/command\/0: program "no-such-pager-xyz" is not on PATH/)
})

test('a good hook passes; config print shows its env values redacted', () => {
  writeFileSync(
    join(dir, 'good.yaml'),
    `templates:\n  demo: { provider: fake, minFree: 0 }\nhooks:\n  - name: dns\n    on: [session.ready]\n    command: [node, dns-hook.mjs]\n    timeout: 10s\n    env: { TOKEN: env:HOOK_TOKEN, ZONE: Z123 }\n`,
  )
  const check = cli(['config', 'check', 'good.yaml'], { HOOK_TOKEN: 'tok-very-secret' })
  assert.equal(check.status, 0, check.stderr)
  const print = cli(['config', 'print', '--config', 'good.yaml'], { HOOK_TOKEN: 'tok-very-secret' })
  assert.equal(print.status, 0, print.stderr)
  assert.ok(!print.stdout.includes('tok-very-secret'), print.stdout)
  assert.ok(!print.stdout.includes('Z123'), 'every env value is treated as a secret')
})

test("the README's hooks example passes config check", () => {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8')
  const at = readme.indexOf('<!-- hooks-example -->')
  const yaml = /```yaml\n([\s\S]*?)```/.exec(readme.slice(at))![1]!
  const cwd = mkdtempSync(join(dir, 'readme-'))
  mkdirSync(join(cwd, 'examples/hooks'), { recursive: true })
  copyFileSync(join(REPO, 'examples/hooks/route53-dns.mjs'), join(cwd, 'examples/hooks/route53-dns.mjs'))
  writeFileSync(join(cwd, 'studiopool.yaml'), `templates:\n  demo: { provider: fake, minFree: 0 }\n${yaml}`)
  const r = spawnSync(process.execPath, [BIN, 'config', 'check', '--config', 'studiopool.yaml'], {
    cwd,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: cwd },
  })
  assert.equal(r.status, 0, r.stderr)
})
