import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { request } from 'undici'
import { isAlive, REPO } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'

/** The pids of a process's children (from /proc), to follow npm → server. */
function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}
function tree(pid: number): number[] {
  return [pid, ...children(pid).flatMap(tree)]
}

test('SIGTERM to the `npm start` process stops the server it started (issue 17: npm exited, the server kept serving)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sp-npmstart-'))
  const cfg = join(dir, 'studiopool.yaml')
  writeFileSync(cfg, 'templates:\n  demo:\n    provider: fake\n    minFree: 0\n')
  const npm = spawn('npm', ['start', '--', '--config', cfg, '--port', '0', '--data-dir', join(dir, 'data')], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '', HOME: dir, STUDIOPOOL_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  npm.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  npm.stderr!.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<number | null>((r) => npm.once('exit', (code) => r(code)))
  let pids: number[] = []
  try {
    const url = await waitFor('the server to listen', () => /listening on (http:\/\/\S+)/.exec(out)?.[1], 60_000)
    pids = tree(npm.pid!)
    assert.ok(pids.length >= 2, `npm and the server: ${pids.join(',')}`)
    assert.equal((await request(`${url}/healthz`)).statusCode, 200)

    npm.kill('SIGTERM')
    await exited
    await waitFor('every process npm started to exit', () => pids.every((p) => !isAlive(p)), 30_000)
    await assert.rejects(request(`${url}/healthz`), /ECONNREFUSED/)
    assert.match(out, /SIGTERM, shutting down/)
  } finally {
    for (const p of new Set([...pids, ...tree(npm.pid!)])) if (isAlive(p)) process.kill(p, 'SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
})
