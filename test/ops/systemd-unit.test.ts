/**
 * deploy/systemd/studiopool.service: `systemd-analyze verify` accepts it, and its exposure level
 * (`systemd-analyze security --offline`) is at most 2.0 ("OK") — the hardening is real.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { REPO } from '../helpers/server-process.js'

const ANALYZE = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p))
const dir = mkdtempSync(join(tmpdir(), 'sp-unit-'))
after(() => rmSync(dir, { recursive: true, force: true }))
const unit = join(dir, 'studiopool.service')
copyFileSync(join(REPO, 'deploy/systemd/studiopool.service'), unit)

test('systemd-analyze verify accepts the unit', { skip: ANALYZE ? false : 'systemd-analyze is not installed' }, () => {
  const r = spawnSync(ANALYZE!, ['verify', unit], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stderr.trim(), '', 'no warnings')
})

test('its exposure level is at most 2.0', { skip: ANALYZE ? false : 'systemd-analyze is not installed' }, () => {
  const r = spawnSync(ANALYZE!, ['security', '--offline=yes', unit], { encoding: 'utf8' })
  const m = /Overall exposure level for studiopool\.service: (\d+\.\d+)/.exec(r.stdout)
  assert.ok(m, r.stdout + r.stderr)
  assert.ok(Number(m[1]) <= 2.0, `exposure ${m[1]}`)
})
