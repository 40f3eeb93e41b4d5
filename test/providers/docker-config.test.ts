/** The docker provider's settings parsing (no Docker needed). */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  parseDockerProviderSettings,
  parseDockerTemplateSettings,
  parseDockerUrl,
  parseSize,
  splitImage,
  userSlug,
} from '../../src/providers/docker/index.js'
import { fromDockerLabels, toDockerLabelKey } from '../../src/providers/docker/index.js'

describe('docker provider settings', () => {
  it('defaults to one local host, and reads every host key', () => {
    const d = parseDockerProviderSettings({})
    assert.deepEqual(
      d.hosts.map((h) => [h.name, h.url, h.publishIp, h.address]),
      [['local', 'unix:///var/run/docker.sock', '127.0.0.1', '127.0.0.1']],
    )
    assert.equal(d.requestTimeoutMs, 30_000)
    const s = parseDockerProviderSettings({
      hosts: [
        { name: 'a', url: 'unix:///run/a.sock', maxInstances: 3, maxConcurrentStarts: 2, labels: { gpu: 'yes' } },
        { name: 'b', url: 'tcp://10.0.0.12:2375', publishIp: '0.0.0.0' },
      ],
      requestTimeout: '5s',
      startTimeout: '1m',
    })
    assert.equal(s.hosts[0]!.maxInstances, 3)
    assert.equal(s.hosts[0]!.maxConcurrentStarts, 2)
    assert.equal(s.hosts[1]!.address, '10.0.0.12', 'published on all addresses: reached at the daemon host')
    assert.equal(s.requestTimeoutMs, 5000)
    assert.equal(s.startTimeoutMs, 60_000)
  })

  it('lists every problem of the provider settings', () => {
    assert.throws(
      () =>
        parseDockerProviderSettings({
          hosts: [
            { name: 'a', url: 'http://x' },
            { name: 'a', url: 'unix:///s' },
            { name: 'a', url: 'unix:///t' },
          ],
          requestTimeout: 'soon',
        }),
      (err: Error) =>
        /hosts\.0\.url/.test(err.message) &&
        /"a" is used twice/.test(err.message) &&
        /requestTimeout/.test(err.message),
    )
    assert.throws(
      () => parseDockerProviderSettings({ hosts: [{ name: 'Bad Name', url: 'unix:///s' }] }),
      /providers\.docker\.hosts\.0\.name/,
    )
    assert.throws(() => parseDockerProviderSettings({ host: [] }), /providers\.docker/)
  })

  it('reads template settings with their defaults', () => {
    const r = parseDockerTemplateSettings(
      { image: 'jupyter/base-notebook', memory: '2g', cpus: 1.5, shmSize: '256m' },
      8888,
    )
    assert.ok(r.settings, r.problems.join('; '))
    assert.equal(r.settings.port, 8888)
    assert.equal(r.settings.memoryBytes, 2 * 1024 ** 3)
    assert.equal(r.settings.nanoCpus, 1_500_000_000)
    assert.deepEqual(r.settings.capDrop, ['ALL'])
    assert.equal(r.settings.noNewPrivileges, true)
    assert.equal(r.settings.pullPolicy, 'ifNotPresent')
    assert.equal(r.settings.pidsLimit, 1024)
    assert.equal(r.settings.user, null)
  })

  it('refuses unknown keys, a home volume shared by everyone, and the Docker socket', () => {
    const r = parseDockerTemplateSettings({ image: 'x', port: 80, privileged: true }, null)
    assert.match(r.problems.join('; '), /docker/)
    const home = parseDockerTemplateSettings(
      { image: 'x', port: 80, home: { volume: 'shared-home', mountPath: '/home/u' } },
      null,
    )
    assert.match(home.problems.join('; '), /\{\{userSlug\}\}/)
    const sock = parseDockerTemplateSettings(
      { image: 'x', port: 80, mounts: [{ type: 'bind', source: '/run/docker.sock', target: '/d' }] },
      null,
    )
    assert.match(sock.problems.join('; '), /never mount the Docker socket/)
    const bind = parseDockerTemplateSettings({ image: 'x', port: 80, mounts: [{ type: 'bind', target: '/d' }] }, null)
    assert.match(bind.problems.join('; '), /mounts\.0\.source/)
  })

  it('sizes, URLs, image names, user slugs and label keys', () => {
    assert.equal(parseSize('512m'), 512 * 1024 ** 2)
    assert.equal(parseSize('1.5gb'), 1.5 * 1024 ** 3)
    assert.equal(parseSize(1000), 1000)
    assert.equal(parseSize('lots'), undefined)
    assert.deepEqual(parseDockerUrl('unix:///run/docker.sock'), { kind: 'unix', path: '/run/docker.sock' })
    assert.deepEqual(parseDockerUrl('tcp://h.example:2375'), { kind: 'tcp', host: 'h.example', port: 2375 })
    assert.throws(() => parseDockerUrl('unix://relative'))
    assert.throws(() => parseDockerUrl('tcp://h'))
    assert.deepEqual(splitImage('rocker/rstudio:4.4.1'), { repo: 'rocker/rstudio', tag: '4.4.1' })
    assert.deepEqual(splitImage('registry:5000/team/app'), { repo: 'registry:5000/team/app', tag: 'latest' })
    assert.deepEqual(splitImage('app@sha256:abc'), { repo: 'app', tag: 'sha256:abc' })
    assert.match(userSlug('Alice Smith@Example.org'), /^alice-smith-example-org-[0-9a-f]{8}$/)
    assert.notEqual(userSlug('alice'), userSlug('Alice'), 'ids that slug alike get different volumes')
    assert.match(userSlug('日本'), /^user-[0-9a-f]{8}$/)
    assert.equal(toDockerLabelKey('studiopool:pool'), 'studiopool.pool')
    assert.equal(toDockerLabelKey('team'), 'team')
    assert.deepEqual(fromDockerLabels({ 'studiopool.owner': 'a', 'studiopool.kind': 'home', team: 'x' }), {
      'studiopool:owner': 'a',
      team: 'x',
    })
  })
})
