#!/usr/bin/env node
// The packaging check (run by .ci/run): packs the package as `npm publish` would, installs the
// tarball into an empty directory as a consumer would, with the node on PATH (CI: Node 24), and
// checks what a consumer sees:
//   - the tarball holds dist/ (with the declarations `studiopool/client` needs) and no tests, benches, CI
//     files or TypeScript sources;
//   - the install prints no warning (no EBADENGINE, no deprecation), and no installed package's
//     `engines` excludes Node 22.12 (the oldest line `engines` promises);
//   - `npx studiopool --version` prints the package's version;
//   - `npx studiopool serve` starts from dist/ and answers /readyz on a free port; it is then
//     stopped by its process group id and must exit.
// Usage: node scripts/pack-check.mjs [--keep]   (--keep leaves the temp directory for a look)
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const keep = process.argv.includes('--keep')
const work = mkdtempSync(join(tmpdir(), 'studiopool-pack-'))
const problems = []
const step = (m) => process.stdout.write(`pack-check: ${m}\n`)

/** Runs a command to completion; returns its combined output; fails the check on a non-zero exit. */
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts })
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}:\n${out}`)
  return { out, stdout: r.stdout ?? '' }
}

/** Lines of npm output that are warnings (npm 11: `npm warn …`; older: `npm WARN …`). */
const warnings = (out) => out.split('\n').filter((l) => /^npm warn|EBADENGINE|deprecated/i.test(l))

async function freePort() {
  const srv = createServer()
  await new Promise((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address()
  await new Promise((r) => srv.close(r))
  return port
}

let semver
/** Whether `range` admits Node 22.12, judged by npm's own semver (npm ships it); null if not found. */
async function satisfies22(range) {
  if (semver === undefined) {
    const path = join(run('npm', ['root', '-g']).stdout.trim(), 'npm/node_modules/semver/index.js')
    semver = existsSync(path) ? ((m) => m.default ?? m)(await import(path)) : null
  }
  return semver ? semver.satisfies('22.12.0', range) : null
}

function installedPackages(dir, out = []) {
  const nm = join(dir, 'node_modules')
  if (!existsSync(nm)) return out
  for (const name of readdirSync(nm)) {
    if (name.startsWith('.')) continue
    const names = name.startsWith('@') ? readdirSync(join(nm, name)).map((n) => `${name}/${n}`) : [name]
    for (const n of names) {
      const p = join(nm, n, 'package.json')
      if (!existsSync(p)) continue
      out.push(JSON.parse(readFileSync(p, 'utf8')))
      installedPackages(join(nm, n), out)
    }
  }
  return out
}

async function main() {
  step(`node ${process.version}, npm ${run('npm', ['--version']).stdout.trim()}, in ${work}`)

  // 1. Build, then pack (without prepack's second build, so that stdout is npm's JSON alone).
  run('npm', ['run', 'build'], { cwd: root })
  const packed = JSON.parse(
    run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], { cwd: root }).stdout,
  )[0]
  const files = packed.files.map((f) => f.path)
  step(`${packed.filename}: ${files.length} files, ${(packed.size / 1024).toFixed(0)} KiB`)
  for (const f of files) {
    if (/^(test|bench|\.ci|src|scripts|docs)\//.test(f) || /\.test\.[cm]?[jt]s$/.test(f) || /(?<!\.d)\.ts$/.test(f))
      problems.push(`the package holds ${f}`)
  }
  for (const need of ['dist/cli/main.js', 'dist/main.js', 'dist/demo-app/server.mjs', 'bin/studiopool.js'])
    if (!files.includes(need)) problems.push(`the package lacks ${need}`)

  // 2. Install into an empty directory, as a consumer (a bare package.json: nothing approved, nothing overridden).
  const consumer = join(work, 'consumer')
  run('mkdir', ['-p', consumer])
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true }, null, 2))
  const install = run('npm', ['install', '--no-audit', '--no-fund', join(work, packed.filename)], { cwd: consumer })
  for (const w of warnings(install.out)) problems.push(`npm install warned: ${w}`)
  const installed = installedPackages(consumer)
  for (const p of installed) {
    const range = p.engines?.node
    if (range && (await satisfies22(range)) === false)
      problems.push(`${p.name}@${p.version} needs node ${range}, which excludes Node 22.12`)
  }
  step(`installed ${installed.length} packages`)

  // 3. --version, from dist/ (the package has no src/).
  const app = join(consumer, 'node_modules', pkg.name)
  if (existsSync(join(app, 'src'))) problems.push('the installed package has src/')
  const version = run('npx', ['--no-install', 'studiopool', '--version'], { cwd: consumer }).out.trim()
  if (version !== pkg.version) problems.push(`studiopool --version printed "${version}", not ${pkg.version}`)
  else step(`studiopool --version: ${version}`)

  // 4. serve: answers /readyz on a free port, then stops on SIGTERM to its process group.
  await serveCheck(consumer)
}

async function serveCheck(consumer) {
  const port = await freePort()
  const child = spawn('npx', ['--no-install', 'studiopool', 'serve', '--port', String(port)], {
    cwd: consumer,
    detached: true, // its own process group: npx, the shell it may use and the server are stopped together
    env: { ...process.env, STUDIOPOOL_DATA_DIR: join(work, 'data'), MIN_FREE_INSTANCES: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.on('data', (d) => (output += d))
  child.stderr.on('data', (d) => (output += d))
  const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })))
  let ready = false
  const deadline = Date.now() + 60_000
  while (!ready && Date.now() < deadline && child.exitCode === null) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`)
      ready = r.status === 200
    } catch {}
    if (!ready) await new Promise((r) => setTimeout(r, 100))
  }
  if (ready) step(`studiopool serve answered /readyz on port ${port}`)
  else problems.push(`studiopool serve did not answer /readyz on port ${port}:\n${output}`)
  try {
    process.kill(-child.pid, 'SIGTERM')
  } catch {}
  const end = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 30_000))])
  if (end === null) {
    problems.push('studiopool serve did not exit within 30 s of SIGTERM')
    try {
      process.kill(-child.pid, 'SIGKILL')
    } catch {}
  }
  for (const l of output.split('\n').filter((x) => /\(node:\d+\)|Warning:/.test(x)))
    problems.push(`serve printed a warning: ${l}`)
}

try {
  await main()
} catch (err) {
  problems.push(err.message)
} finally {
  if (!keep) rmSync(work, { recursive: true, force: true })
}
if (problems.length) {
  process.stderr.write(`pack-check: FAILED\n${problems.map((p) => `  - ${p}`).join('\n')}\n`)
  process.exit(1)
}
step('ok')
