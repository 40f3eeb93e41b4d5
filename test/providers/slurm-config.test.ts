/** The slurm provider's settings, squeue parsing and job script, without a cluster. */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { describe, it } from 'node:test'
import { loadConfig } from '../../src/config/load.js'
import { newInstanceId } from '../../src/domain/ids.js'
import {
  SQUEUE_FORMAT,
  SlurmProvider,
  jobToInstance,
  parseSlurmProviderSettings,
  parseSlurmTemplateSettings,
  parseSqueue,
  parseTimeLeft,
} from '../../src/providers/slurm/index.js'
import { jobScript } from '../../src/providers/slurm/slurm-script.js'
import { makeTemplate } from '../helpers/template.js'
import { silent, slurmTemplate } from './slurm-fixture.js'

describe('slurm settings', () => {
  it('the config file takes a slurm: template key and providers.slurm', () => {
    const config = loadConfig({
      text: `
providers:
  slurm: { pollInterval: 5s, submitHost: login1 }
templates:
  nb: { provider: slurm, minFree: 0, slurm: { script: "exec app", partition: interactive, time: 2h } }
`,
      env: {},
      cwd: '/tmp',
    })
    const t = config.templates.find((x) => x.name === 'nb')!
    assert.deepEqual(t.settings, { script: 'exec app', partition: 'interactive', time: '2h' })
    assert.equal(parseSlurmTemplateSettings(t.settings).settings?.timeMinutes, 120)
    assert.equal(parseSlurmProviderSettings(config.providers.slurm!).pollIntervalMs, 5000)
  })

  it('bad template settings are clear problems, each with its key', () => {
    const bad = (settings: Record<string, unknown>) => parseSlurmTemplateSettings(settings).problems.join('; ')
    assert.match(bad({}), /slurm.*script/)
    assert.match(bad({ script: 'x', portRange: '80-90' }), /slurm\.portRange/)
    assert.match(bad({ script: 'x', time: 'soon' }), /slurm\.time/)
    assert.match(bad({ script: 'x', extraArgs: ['; rm -rf /'] }), /slurm\.extraArgs/)
    assert.match(bad({ script: 'x', partition: 'a b' }), /slurm\.partition/)
    assert.match(bad({ script: 'x', user: 'Robert; drop' }), /slurm\.user/)
    assert.equal(
      parseSlurmTemplateSettings({ script: 'x' }, 3_600_000).settings?.timeMinutes,
      61,
      'maxLifetime + 1 min',
    )
  })

  it('provider settings: unknown keys, bad durations and prefix without submitPrefix are refused', () => {
    assert.throws(() => parseSlurmProviderSettings({ nope: 1 }), /providers\.slurm/)
    assert.throws(() => parseSlurmProviderSettings({ pollInterval: 'often' }), /providers\.slurm\.pollInterval/)
    assert.throws(() => parseSlurmProviderSettings({ runAs: 'prefix' }), /submitPrefix/)
  })

  it('validateTemplate: warm instances need warmUser; root is never a session account', () => {
    const p = new SlurmProvider({ poolId: 'p', dataDir: '/nonexistent', settings: {}, log: silent })
    assert.match(
      p.validateTemplate(makeTemplate({ provider: 'slurm', minFree: 1, settings: { script: 'x' } })).join(),
      /warmUser/,
    )
    assert.match(p.validateTemplate(slurmTemplate({ user: 'root' })).join(), /never run as root/)
    assert.deepEqual(p.validateTemplate(slurmTemplate()), [])
  })
})

describe('squeue answers', () => {
  it('parses the fixed format, a comment holding the separator-free labels and the reported address', () => {
    const id = newInstanceId()
    const labels = Buffer.from(JSON.stringify({ 'studiopool:instance': id, 'studiopool:template': 'nb' })).toString(
      'base64url',
    )
    const line = [
      '42',
      'RUNNING',
      'None',
      `studiopool.p.${id}`,
      '2026-01-01T00:00:00',
      '1:02:03',
      'alice',
      'n1',
      `studiopool:${labels} addr=n1.hpc:20001`,
    ].join('\u001f')
    const [job] = parseSqueue(`${line}\nnot a job line\n`)
    assert.equal(SQUEUE_FORMAT.split('\u001f').length, 9)
    const inst = jobToInstance(job!, 'studiopool.p.', 'p')
    assert.equal(inst.state, 'running')
    assert.equal(inst.address, 'http://n1.hpc:20001')
    assert.equal(inst.instanceId, id)
    assert.match(inst.message ?? '', /1:02:03 of walltime left/)
  })

  it('maps Slurm states: pending with its reason, held as stopped, TIMEOUT as lifetime, FAILED as failed', () => {
    const job = (state: string, reason = 'None', start = 'N/A', comment = '') =>
      jobToInstance(
        { id: '7', state, reason, name: 'studiopool.p.x', start, timeLeft: '5:00', user: 'u', nodes: '', comment },
        'studiopool.p.',
        'p',
      )
    assert.match(
      job('PENDING', 'QOSMaxJobsPerUserLimit', '2026-01-01T10:00:00').message!,
      /QOSMaxJobsPerUserLimit; expected start 2026-01-01T10:00:00/,
    )
    assert.equal(job('PENDING', 'JobHeldUser').state, 'stopped')
    assert.equal(job('TIMEOUT').endReason, 'lifetime')
    assert.equal(job('FAILED', 'NonZeroExitCode').endReason, 'failed')
    assert.equal(job('CANCELLED').endReason, undefined)
    assert.match(job('RUNNING', 'None', 'N/A', 'studiopool:e30 addr=h:20001').message!, /only 5:00 of walltime left/)
  })

  it('time left', () => {
    assert.equal(parseTimeLeft('1-02:03:04'), ((26 * 60 + 3) * 60 + 4) * 1000)
    assert.equal(parseTimeLeft('05:00'), 300_000)
    assert.equal(parseTimeLeft('UNLIMITED'), null)
  })
})

describe('job script', () => {
  it('is valid bash; tokens are quoted, the port and host are the job’s own', () => {
    const id = newInstanceId()
    const template = slurmTemplate({ script: 'echo \'{{basePath}}\' {{port}} {{host}} "{{appToken}}"' })
    const script = jobScript(
      {
        id,
        poolId: 'p',
        template,
        basePath: `/s/${id}/`,
        labels: {},
        progressUrl: 'http://x/p',
        progressToken: "it's secret",
        appToken: 'tok$en',
        ownerId: null,
        sessionUrl: 'http://x/s/',
      },
      parseSlurmTemplateSettings(template.settings).settings!,
      'studiopool:abc',
      '/tmp',
    )
    assert.equal(spawnSync('bash', ['-n'], { input: script }).status, 0, 'bash -n accepts it')
    assert.match(script, /echo '\/s\/[^']+\/' \$\{PORT\} \$\{HOST\} "\$\{STUDIOPOOL_APP_TOKEN\}"/)
    assert.match(script, /export STUDIOPOOL_APP_TOKEN='tok\$en'/)
    assert.match(script, /export STUDIOPOOL_PROGRESS_TOKEN='it'\\''s secret'/)
  })
})
