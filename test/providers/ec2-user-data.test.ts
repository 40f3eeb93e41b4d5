/**
 * Runs the shipped user data (examples/rstudio/user-data.sh), rendered by the ec2 provider exactly
 * as it would be sent to EC2, with real bash and real curl against a real HTTP server on 127.0.0.1
 * that stands for studiopool's progress endpoint and for the app. The machine-changing commands
 * (apt-get, systemctl, aws, docker, sleep) are stubs on PATH that record their arguments: this
 * test cannot install Docker or reach ECR, but it checks the script's control flow, the commands it
 * runs, and every progress report it makes. AWS is mocked with aws-sdk-client-mock as elsewhere.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, beforeEach, describe, it } from 'node:test'
import pino from 'pino'
import { createEc2Provider } from '../../src/providers/ec2/index.js'
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE, type InstanceSpec } from '../../src/providers/provider.js'
import { makeTemplate } from '../helpers/template.js'
import { FakeEc2 } from './ec2-fake-aws.js'

interface Report {
  auth: string | undefined
  type: string | undefined
  body: { progress: number; message: string }
}

let server: Server
let port: number
const reports: Report[] = []
let dir: string
let aws: FakeEc2
const children = new Set<number>()

before(async () => {
  server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/api/v1/instances/aaaaaaaaaaaaaaaaaaaa/progress') {
        reports.push({ auth: req.headers.authorization, type: req.headers['content-type'], body: JSON.parse(body) })
        res.writeHead(204).end()
      } else {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('rstudio')
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  port = (server.address() as AddressInfo).port
})
after(async () => {
  for (const pid of children) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // exited
    }
  }
  await new Promise<void>((r) => server.close(() => r()))
})
beforeEach(() => {
  reports.length = 0
  dir = mkdtempSync(join(tmpdir(), 'sp-userdata-'))
  aws = new FakeEc2()
})
afterEach(() => {
  aws.restore()
  rmSync(dir, { recursive: true, force: true })
})

/** Stub commands that log "name args…" to calls.log; `failing` ones exit 1. */
function stubs(failing: string[] = []): string {
  const bin = join(dir, 'bin')
  mkdirSync(bin, { recursive: true })
  writeFileSync(join(dir, 'calls.log'), '')
  for (const name of ['apt-get', 'systemctl', 'aws', 'docker', 'sleep']) {
    const p = join(bin, name)
    const fail = failing.some((f) => f === name)
    writeFileSync(
      p,
      // `docker login` reads the password from the pipe before it logs, so its line always follows
      // the `aws` line (which logs before it writes), and it records what it was given.
      `#!/bin/bash\n${
        name === 'docker'
          ? `if [ "$1" = login ]; then echo "docker $* <$(cat)" >> '${join(dir, 'calls.log')}'; else echo "docker $*" >> '${join(dir, 'calls.log')}'; fi\n`
          : `echo "${name} $*" >> '${join(dir, 'calls.log')}'\n`
      }${name === 'aws' ? 'echo ecr-password\n' : ''}exit ${fail ? 1 : 0}\n`,
      { flag: 'w' },
    )
    chmodSync(p, 0o755)
  }
  return bin
}

async function renderedScript(): Promise<string> {
  const template = makeTemplate({
    name: 'rstudio',
    displayName: 'RStudio',
    provider: 'ec2',
    port,
    settings: {
      imageId: 'ami-0130bec6e5047f596',
      instanceType: 't2.micro',
      securityGroupIds: ['sg-1234aa12a123ab123'],
      tokens: { registry: 'XXXXXXX.dkr.ecr.eu-central-1.amazonaws.com' },
    },
  })
  const id = 'aaaaaaaaaaaaaaaaaaaa'
  const spec: InstanceSpec = {
    id,
    poolId: 'p',
    template,
    basePath: `/s/${id}/`,
    labels: { [LABEL_POOL]: 'p', [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'rstudio' },
    progressUrl: `http://127.0.0.1:${port}/api/v1/instances/${id}/progress`,
    progressToken: 'tok-0123456789',
    appToken: 'test-app-token',
    ownerId: null,
    sessionUrl: 'http://127.0.0.1:1/s/x/',
  }
  const provider = createEc2Provider({
    poolId: 'p',
    dataDir: dir,
    settings: { region: 'eu-central-1' },
    log: pino({ level: 'silent' }),
  })
  const input = await provider.buildRunInput(spec, 'on-demand')
  await provider.close()
  return Buffer.from(input.UserData!, 'base64').toString('utf8')
}

async function runScript(script: string, bin: string): Promise<{ code: number | null; stderr: string }> {
  const file = join(dir, 'user-data.sh')
  writeFileSync(file, script)
  const child = spawn('bash', [file], { env: { PATH: `${bin}:/usr/bin:/bin` }, stdio: ['ignore', 'ignore', 'pipe'] })
  children.add(child.pid!)
  let stderr = ''
  child.stderr.on('data', (c) => (stderr += c))
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)))
  clearTimeout(timer)
  children.delete(child.pid!)
  return { code, stderr }
}

describe('the shipped RStudio user data', () => {
  it('installs docker, logs in to ECR, pulls, runs RStudio, and reports progress at each step', async () => {
    const { code, stderr } = await runScript(await renderedScript(), stubs())
    assert.equal(code, 0, stderr)
    const calls = readFileSync(join(dir, 'calls.log'), 'utf8').trim().split('\n')
    assert.deepEqual(calls, [
      'apt-get -y -q -o DPkg::Lock::Timeout=300 update',
      'apt-get -y -q -o DPkg::Lock::Timeout=300 install docker.io awscli curl ca-certificates',
      'systemctl enable --now docker',
      'aws ecr get-login-password --region eu-central-1',
      'docker login --username AWS --password-stdin XXXXXXX.dkr.ecr.eu-central-1.amazonaws.com <ecr-password',
      'docker pull XXXXXXX.dkr.ecr.eu-central-1.amazonaws.com/rstudio',
      'docker rm -f rstudio',
      `docker run -d --name rstudio --restart unless-stopped -p ${port}:8787 -e DISABLE_AUTH=true XXXXXXX.dkr.ecr.eu-central-1.amazonaws.com/rstudio`,
    ])
    assert.deepEqual(
      reports.map((r) => r.body),
      [
        { progress: 5, message: 'instance booted' },
        { progress: 30, message: 'docker installed' },
        { progress: 60, message: 'image pulled' },
        { progress: 90, message: 'app started' },
      ],
    )
    for (const r of reports) {
      assert.equal(r.auth, 'Bearer tok-0123456789')
      assert.equal(r.type, 'application/json')
    }
  })

  it('a failing step stops the script and reports where it failed; retries are bounded', async () => {
    const { code } = await runScript(await renderedScript(), stubs(['docker']))
    assert.notEqual(code, 0)
    const calls = readFileSync(join(dir, 'calls.log'), 'utf8').trim().split('\n')
    assert.equal(calls.filter((c) => c.startsWith('docker login')).length, 5, 'the ECR login is tried 5 times')
    assert.equal(calls.filter((c) => c.startsWith('docker run')).length, 0, 'nothing runs after the failure')
    const last = reports.at(-1)!.body
    assert.equal(last.progress, 30)
    assert.match(last.message, /^launch script failed at line \d+$/)
  })

  it('an unreachable progress endpoint never stops the launch', async () => {
    const script = (await renderedScript()).replace(
      /PROGRESS_URL='[^']*'/,
      "PROGRESS_URL='http://127.0.0.1:9/progress'",
    )
    const { code, stderr } = await runScript(script, stubs())
    assert.equal(code, 0, stderr)
    assert.equal(reports.length, 0)
    assert.match(readFileSync(join(dir, 'calls.log'), 'utf8'), /docker run/)
  })
})
