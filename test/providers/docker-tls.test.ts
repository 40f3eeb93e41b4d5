/**
 * A `tcp://` Docker host with TLS: a private dockerd started with `--tlsverify` on a loopback TCP
 * port (certificates made here with openssl: a CA, the daemon's certificate for 127.0.0.1, a client
 * certificate). With the CA and the client certificate the provider runs a session there; without
 * the client certificate, or trusting another CA, the host does not answer and init fails with a
 * retryable PROVIDER_UNAVAILABLE that says why.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { ProviderError } from '../../src/domain/errors.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { DockerProvider } from '../../src/providers/docker/index.js'
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE, type OperationOptions } from '../../src/providers/provider.js'
import { dockerSkipReason, startDockerd, testAppSettings, type TestDockerd } from '../helpers/docker.js'
import { makeTemplate } from '../helpers/template.js'

const skip =
  dockerSkipReason() ?? (spawnSync('openssl', ['version']).status === 0 ? undefined : 'openssl is not installed')
const log = pino({ level: 'silent' })
const op: OperationOptions = { log }
const POOL = 'docker-tls-pool'

function openssl(cwd: string, ...args: string[]): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' })
  assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`)
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`; `other`: a second CA. */
function makeCerts(dir: string): void {
  const days = ['-days', '2']
  openssl(
    dir,
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca-key.pem',
    '-out',
    'ca.pem',
    '-subj',
    '/CN=test-ca',
    ...days,
  )
  openssl(
    dir,
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'other-key.pem',
    '-out',
    'other.pem',
    '-subj',
    '/CN=other-ca',
    ...days,
  )
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n')
  for (const who of ['server', 'client']) {
    openssl(
      dir,
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${who}-key.pem`,
      '-out',
      `${who}.csr`,
      '-subj',
      `/CN=${who}`,
    )
    openssl(
      dir,
      'x509',
      '-req',
      '-in',
      `${who}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca-key.pem',
      '-CAcreateserial',
      '-out',
      `${who}.pem`,
      '-extfile',
      `${who}.ext`,
      ...days,
    )
  }
}

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

describe('docker host over TCP with TLS (dockerd --tlsverify)', { skip, timeout: 300_000 }, () => {
  let docker: TestDockerd
  let url: string
  let certs: string
  const providers: DockerProvider[] = []

  before(async () => {
    const port = await freePort()
    certs = mkdtempSync(join(tmpdir(), 'spdk-certs-'))
    makeCerts(certs)
    url = `tcp://127.0.0.1:${port}`
    docker = await startDockerd({
      iptables: false,
      extraArgs: [
        '--host',
        url,
        '--tlsverify',
        '--tlscacert',
        join(certs, 'ca.pem'),
        '--tlscert',
        join(certs, 'server.pem'),
        '--tlskey',
        join(certs, 'server-key.pem'),
      ],
    })
  })

  after(async () => {
    for (const p of providers) await p.close()
    await docker?.stop()
    if (certs) rmSync(certs, { recursive: true, force: true })
  })

  function make(tls: Record<string, unknown>): DockerProvider {
    const p = new DockerProvider({
      poolId: POOL,
      dataDir: '/nonexistent',
      settings: { hosts: [{ name: 'tls', url, tls }], requestTimeout: '10s' },
      log,
    })
    providers.push(p)
    return p
  }

  it('with the CA and a client certificate: a session runs on the TLS host', async () => {
    const p = make({ ca: join(certs, 'ca.pem'), cert: join(certs, 'client.pem'), key: join(certs, 'client-key.pem') })
    await p.init(op)
    const template = makeTemplate({ name: 'demo', provider: 'docker', minFree: 0, settings: testAppSettings() })
    const id = newInstanceId()
    const inst = await p.create(
      {
        id,
        poolId: POOL,
        template,
        basePath: `/s/${id}/`,
        labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'demo', 'studiopool:generation': '0' },
        progressUrl: `http://127.0.0.1:9/api/v1/instances/${id}/progress`,
        progressToken: 't',
        appToken: 'a',
        ownerId: null,
        sessionUrl: `http://gateway.test/s/${id}/`,
      },
      op,
    )
    assert.equal(inst.state, 'running')
    assert.match(inst.ref, /^tls\//)
    assert.equal((await p.list(op)).length, 1)
    await p.destroy(inst.ref, op)
  })

  it('without a client certificate, or trusting another CA: the host does not answer, and init says why', async () => {
    for (const tls of [
      { ca: join(certs, 'ca.pem') },
      { ca: join(certs, 'other.pem'), cert: join(certs, 'client.pem'), key: join(certs, 'client-key.pem') },
    ]) {
      const p = make(tls)
      await assert.rejects(p.init(op), (err: unknown) => {
        assert.ok(err instanceof ProviderError, String(err))
        assert.equal(err.code, 'PROVIDER_UNAVAILABLE')
        assert.equal(err.retryable, true)
        assert.match(err.message, /no Docker host answers: tls: /)
        return true
      })
      assert.equal(p.hostStatus()[0]!.up, false)
    }
  })
})
