/** runHook (src/pool/hooks.ts): exit codes, spawn errors, stdin and the env it gets, stderr cut and blanked. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runHook, type HookConfig } from '../../src/pool/hooks.js'

const hook = (command: string[], over: Partial<HookConfig> = {}): HookConfig => ({
  name: 't',
  on: ['session.ready'],
  command,
  timeoutMs: 10_000,
  env: {},
  templates: [],
  maxAttempts: 1,
  ...over,
})
const node = (code: string) => [process.execPath, '-e', code]

test('a non-zero exit is failed, with its code and stderr', async () => {
  const r = await runHook(hook(node('console.error("no zone"); process.exit(3)')), '', {}, process.env)
  assert.equal(r.outcome, 'failed')
  assert.equal(r.exitCode, 3)
  assert.equal(r.stderr, 'no zone\n')
})

test('a program that cannot start is a spawn error, not a throw', async () => {
  const r = await runHook(hook(['/nonexistent/hook-program']), '', {}, process.env)
  assert.equal(r.outcome, 'spawn-error')
  assert.match(r.stderr, /ENOENT/)
})

test('stdin and the environment: the event, the hook env and STUDIOPOOL_*, not the server secrets', async () => {
  const code =
    'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{console.error(JSON.stringify({s,e:process.env}))})'
  const r = await runHook(
    hook(node(code), { env: { ZONE: 'Z1' } }),
    '{"type":"x"}',
    { STUDIOPOOL_EVENT: 'x' },
    {
      PATH: process.env.PATH,
      STUDIOPOOL_KEY: 'server-secret',
    },
  )
  assert.equal(r.outcome, 'ok')
  const seen = JSON.parse(r.stderr) as { s: string; e: Record<string, string> }
  assert.equal(seen.s, '{"type":"x"}')
  assert.equal(seen.e['STUDIOPOOL_EVENT'], 'x')
  assert.equal(seen.e['STUDIOPOOL_KEY'], undefined)
  assert.equal(seen.e['PATH'], process.env.PATH)
})

test('stderr is cut at 1 KiB and the env values are blanked', async () => {
  const r = await runHook(
    hook(node('process.stderr.write("secret-value ".repeat(500))'), { env: { T: 'secret-value' } }),
    '',
    {},
    process.env,
  )
  assert.equal(r.outcome, 'ok')
  assert.equal(r.stderr.length, 1024)
  assert.ok(!r.stderr.includes('secret-value'))
})

test('a hook that ignores SIGTERM is killed with SIGKILL after the grace', { timeout: 20_000 }, async () => {
  const r = await runHook(
    hook(node('process.on("SIGTERM",()=>{});setInterval(()=>{},1000)'), { timeoutMs: 300 }),
    '',
    {},
    process.env,
  )
  assert.equal(r.outcome, 'timeout')
  assert.equal(r.signal, 'SIGKILL')
  assert.ok(r.durationMs >= 5_000, `${r.durationMs} ms`)
})
