/**
 * Unit tests of the ec2 provider.
 *
 * AWS itself cannot run here (no account, no network): the provider uses its real SDK client
 * (`EC2Client` from @aws-sdk/client-ec2), and aws-sdk-client-mock replaces `EC2Client#send` with
 * the in-memory EC2 of ./ec2-fake-aws.ts. So every assertion on "what we send" is on the exact
 * command input the SDK would have serialized, and "what AWS answers" follows AWS's documented
 * behaviour (ClientToken idempotency, NextToken paging, InvalidInstanceID.NotFound, error codes).
 * The backoff sleep is injected, so retry tests do not wait.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { Writable } from 'node:stream'
import { afterEach, beforeEach, describe, it } from 'node:test'
import {
  DescribeInstancesCommand,
  RunInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
} from '@aws-sdk/client-ec2'
import pino from 'pino'
import type { TemplateConfig } from '../../src/config/types.js'
import { ProviderError } from '../../src/domain/errors.js'
import {
  clientToken,
  createEc2Provider,
  DEFAULT_USER_DATA_TEMPLATE,
  LABEL_GENERATION,
  validateTemplate,
  type Ec2Provider,
} from '../../src/providers/ec2/index.js'
import {
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type OperationOptions,
} from '../../src/providers/provider.js'
import { makeTemplate } from '../helpers/template.js'
import { awsError, FakeEc2 } from './ec2-fake-aws.js'

const POOL = 'seed-pool'
const op: OperationOptions = { log: pino({ level: 'silent' }) }

/** The seed's RStudio config example (seeds/000, "The config for an RStudio") and its env vars. */
const SEED = {
  IMAGE_ID: 'ami-0130bec6e5047f596',
  IMAGE_TYPE: 't2.micro',
  REGION: 'eu-central-1',
  ACCOUNT: 'XXXXXXX.dkr.ecr.eu-central-1.amazonaws.com',
  SECURITY_GROUP: 'sg-1234aa12a123ab123',
  INSTANCE_PROFILE: 'ec2-admin',
  KEY_NAME: 'LambdaInstance',
}

function seedTemplate(settings: Record<string, unknown> = {}, overrides: Partial<TemplateConfig> = {}): TemplateConfig {
  return makeTemplate({
    name: 'rstudio',
    displayName: 'RStudio',
    provider: 'ec2',
    port: 8787,
    settings: {
      imageId: SEED.IMAGE_ID,
      instanceType: SEED.IMAGE_TYPE,
      keyName: SEED.KEY_NAME,
      securityGroupIds: [SEED.SECURITY_GROUP],
      iamInstanceProfile: SEED.INSTANCE_PROFILE,
      tokens: { registry: SEED.ACCOUNT },
      tags: { Purpose: 'RStudio' },
      ...settings,
    },
    ...overrides,
  })
}

const IDS = ['aaaaaaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbbbbbb', 'cccccccccccccccccccc'] as const

function specFor(template: TemplateConfig, id: string = IDS[0], extra: Record<string, string> = {}): InstanceSpec {
  return {
    id,
    poolId: POOL,
    template,
    basePath: `/s/${id}/`,
    labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: template.name, ...extra },
    progressUrl: `https://sessions.example.org/api/v1/instances/${id}/progress`,
    progressToken: 'ptok-SECRET-0123456789',
    appToken: 'test-app-token',
    ownerId: null,
    sessionUrl: 'http://127.0.0.1:1/s/x/',
  }
}

let aws: FakeEc2
let sleeps: number[]

function makeProvider(settings: Record<string, unknown> = {}): Ec2Provider {
  return createEc2Provider(
    { poolId: POOL, dataDir: '/nonexistent', settings: { region: SEED.REGION, ...settings }, log: op.log },
    {
      sleep: async (ms) => {
        sleeps.push(ms)
      },
      random: () => 0.5,
    },
  )
}

function runInputs(): Record<string, any>[] {
  return aws.mock.commandCalls(RunInstancesCommand).map((c) => c.args[0].input as Record<string, any>)
}

function decode(userData: string): string {
  return Buffer.from(userData, 'base64').toString('utf8')
}

beforeEach(() => {
  aws = new FakeEc2()
  sleeps = []
})
afterEach(() => {
  aws.restore()
})

describe('RunInstances for the seed configuration', () => {
  it('sends every field of the seed config example, our labels and the rendered user data', async () => {
    const p = makeProvider()
    const template = seedTemplate()
    assert.deepEqual(p.validateTemplate(template), [])
    const spec = specFor(template, IDS[0], { [LABEL_OWNER]: 'user-1234-abcd' })
    const inst = await p.create(spec, op)

    const calls = runInputs()
    assert.equal(calls.length, 1)
    const { UserData, ...rest } = calls[0]!
    const tags = [
      { Key: 'Name', Value: `studiopool-rstudio-${IDS[0]}` },
      { Key: 'Purpose', Value: 'RStudio' },
      { Key: LABEL_POOL, Value: POOL },
      { Key: LABEL_INSTANCE, Value: IDS[0] },
      { Key: LABEL_TEMPLATE, Value: 'rstudio' },
      { Key: LABEL_OWNER, Value: 'user-1234-abcd' },
    ]
    assert.deepEqual(rest, {
      ImageId: 'ami-0130bec6e5047f596',
      InstanceType: 't2.micro',
      KeyName: 'LambdaInstance',
      MinCount: 1,
      MaxCount: 1,
      SecurityGroupIds: ['sg-1234aa12a123ab123'],
      IamInstanceProfile: { Name: 'ec2-admin' },
      TagSpecifications: [
        { ResourceType: 'instance', Tags: tags },
        { ResourceType: 'volume', Tags: tags },
      ],
      ClientToken: clientToken(POOL, IDS[0], '0', 'on-demand'),
    })

    // The user data, decoded, is the shipped template with every token replaced.
    const expected = readFileSync(DEFAULT_USER_DATA_TEMPLATE, 'utf8')
      .replaceAll('{{{progressUrl}}}', spec.progressUrl)
      .replaceAll('{{{progressToken}}}', spec.progressToken)
      .replaceAll('{{{region}}}', 'eu-central-1')
      .replaceAll('{{{registry}}}', SEED.ACCOUNT)
      .replaceAll('{{{image}}}', 'rstudio')
      .replaceAll('{{{port}}}', '8787')
    const script = decode(UserData)
    assert.equal(script, expected)
    assert.doesNotMatch(script, /\{\{\{/)
    assert.match(script, /^#!\/bin\/bash\n/)
    assert.match(script, /^set -euo pipefail$/m)
    assert.match(script, /^REGISTRY='XXXXXXX\.dkr\.ecr\.eu-central-1\.amazonaws\.com'$/m)
    assert.match(script, /^REGION='eu-central-1'$/m)
    assert.match(script, /-e DISABLE_AUTH=true/)
    for (const step of ['docker installed', 'image pulled', 'app started'])
      assert.match(script, new RegExp(`progress \\d+ "${step}"`))

    assert.equal(inst.instanceId, IDS[0])
    assert.equal(inst.template, 'rstudio')
    assert.equal(inst.state, 'pending')
    assert.match(inst.ref, /^i-[0-9a-f]{17}$/)
    assert.equal(inst.labels.Purpose, 'RStudio')
  })

  it('adds SubnetId, an instance profile ARN and the root volume size when configured', async () => {
    const p = makeProvider()
    const arn = 'arn:aws:iam::123456789012:instance-profile/studiopool-rstudio'
    await p.create(
      specFor(seedTemplate({ subnetId: 'subnet-0abc1234def567890', iamInstanceProfile: arn, volumeSize: 30 })),
      op,
    )
    const input = runInputs()[0]!
    assert.equal(input.SubnetId, 'subnet-0abc1234def567890')
    assert.deepEqual(input.IamInstanceProfile, { Arn: arn })
    assert.deepEqual(input.BlockDeviceMappings, [
      { DeviceName: '/dev/sda1', Ebs: { VolumeSize: 30, VolumeType: 'gp3', DeleteOnTermination: true } },
    ])
  })

  it('never logs the progress token or the user data', async () => {
    const lines: string[] = []
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk))
        cb()
      },
    })
    const log = pino({ level: 'trace' }, sink)
    const p = makeProvider()
    aws.failNext('RunInstances', awsError('RequestLimitExceeded', 'Request limit exceeded.', 503))
    await p.create(specFor(seedTemplate()), { log })
    const all = lines.join('')
    assert.ok(lines.length >= 2, 'something was logged')
    assert.doesNotMatch(all, /ptok-SECRET/)
    assert.doesNotMatch(all, /UserData/)
  })
})

describe('spot', () => {
  it('requests a one-time spot instance with the max price', async () => {
    const p = makeProvider()
    await p.create(specFor(seedTemplate({ spot: { enabled: true, maxPrice: '0.0116' } })), op)
    const input = runInputs()[0]!
    assert.deepEqual(input.InstanceMarketOptions, {
      MarketType: 'spot',
      SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate', MaxPrice: '0.0116' },
    })
    assert.equal(input.ClientToken, clientToken(POOL, IDS[0], '0', 'spot'))
  })

  for (const code of [
    'InsufficientInstanceCapacity',
    'SpotMaxPriceTooLow',
    'MaxSpotInstanceCountExceeded',
    'Unsupported',
  ]) {
    it(`falls back to on-demand on ${code}, with a different ClientToken`, async () => {
      const p = makeProvider()
      aws.failNext(
        'RunInstances',
        awsError(code, `There is no Spot capacity available that matches your request. (${code})`, 500),
      )
      const inst = await p.create(specFor(seedTemplate({ spot: { enabled: true } })), op)
      const [first, second] = runInputs()
      assert.equal(runInputs().length, 2)
      assert.equal(first!.InstanceMarketOptions.MarketType, 'spot')
      assert.equal(second!.InstanceMarketOptions, undefined)
      assert.notEqual(second!.ClientToken, first!.ClientToken)
      assert.equal(second!.ClientToken, clientToken(POOL, IDS[0], '0', 'on-demand'))
      assert.equal(inst.state, 'pending')
      assert.equal(aws.instances.size, 1)
      assert.equal(sleeps.length, 0, 'a capacity error is not retried with backoff')
    })
  }

  it('without fallback, a capacity error fails with a reason a user can read', async () => {
    const p = makeProvider()
    aws.failNext(
      'RunInstances',
      awsError('InsufficientInstanceCapacity', 'We currently do not have sufficient t2.micro capacity.', 500),
    )
    await assert.rejects(
      p.create(specFor(seedTemplate({ spot: { enabled: true, fallbackToOnDemand: false } })), op),
      (err: unknown) => {
        assert.ok(err instanceof ProviderError)
        assert.equal(err.code, 'PROVIDER_ERROR')
        assert.equal(err.retryable, true)
        assert.match(err.message, /no free capacity for this machine type right now/)
        return true
      },
    )
    assert.equal(runInputs().length, 1)
    assert.equal(aws.instances.size, 0)
  })

  it('an on-demand capacity error is not "fallen back" again', async () => {
    const p = makeProvider()
    aws.failNext(
      'RunInstances',
      awsError('InsufficientInstanceCapacity', 'no capacity', 500),
      awsError('InsufficientInstanceCapacity', 'no capacity', 500),
    )
    await assert.rejects(p.create(specFor(seedTemplate({ spot: { enabled: true } })), op), /no free capacity/)
    assert.equal(runInputs().length, 2)
  })
})

describe('throttling and retries', () => {
  it('retries RequestLimitExceeded with jittered backoff, then succeeds', async () => {
    const p = makeProvider({ retryBaseDelayMs: 100, retryMaxDelayMs: 1000 })
    aws.failNext(
      'RunInstances',
      awsError('RequestLimitExceeded', 'Request limit exceeded.', 503),
      awsError('Throttling', 'Rate exceeded', 400),
    )
    const inst = await p.create(specFor(seedTemplate()), op)
    assert.match(inst.ref, /^i-/)
    assert.equal(runInputs().length, 3)
    // random() = 0.5: half of min(max, base × 2^attempt).
    assert.deepEqual(sleeps, [50, 100])
    // The retries reuse one ClientToken: AWS launches at most once.
    assert.equal(new Set(runInputs().map((i) => i.ClientToken)).size, 1)
  })

  it('a response lost after AWS launched does not launch twice (same ClientToken on retry)', async () => {
    const p = makeProvider()
    aws.lostRunResponses = 1
    const inst = await p.create(specFor(seedTemplate()), op)
    assert.equal(runInputs().length, 2)
    assert.equal(aws.instances.size, 1)
    assert.equal(inst.ref, [...aws.instances.keys()][0])
  })

  it('gives up after maxRetries with a retryable ProviderError', async () => {
    const p = makeProvider({ maxRetries: 3 })
    aws.failNext(
      'DescribeInstances',
      ...Array.from({ length: 10 }, () => awsError('RequestLimitExceeded', 'Request limit exceeded.', 503)),
    )
    await assert.rejects(p.list(op), (err: unknown) => {
      assert.ok(err instanceof ProviderError)
      assert.equal(err.retryable, true)
      assert.equal(err.code, 'PROVIDER_ERROR')
      assert.match(err.message, /throttling ec2:DescribeInstances .*gave up after 4 attempts/)
      return true
    })
    assert.equal(aws.mock.commandCalls(DescribeInstancesCommand).length, 4)
    assert.equal(sleeps.length, 3)
  })

  it('retries 5xx and network errors too, but not client errors', async () => {
    const p = makeProvider()
    aws.failNext(
      'DescribeInstances',
      awsError('InternalError', 'An internal error has occurred', 500),
      Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }),
    )
    assert.deepEqual(await p.list(op), [])
    assert.equal(aws.mock.commandCalls(DescribeInstancesCommand).length, 3)

    aws.failNext(
      'RunInstances',
      awsError('InvalidAMIID.NotFound', "The image id '[ami-0130bec6e5047f596]' does not exist", 400),
    )
    await assert.rejects(p.create(specFor(seedTemplate()), op), (err: unknown) => {
      assert.ok(err instanceof ProviderError)
      assert.equal(err.retryable, false)
      assert.match(err.message, /InvalidAMIID\.NotFound: The image id '\[ami-0130bec6e5047f596\]' does not exist/)
      return true
    })
    assert.equal(runInputs().length, 1)
  })
})

describe('idempotency', () => {
  it('ClientToken is deterministic, at most 64 characters, and distinct per instance, generation and market', () => {
    const a = clientToken(POOL, IDS[0], '0', 'on-demand')
    assert.equal(a, clientToken(POOL, IDS[0], '0', 'on-demand'))
    assert.ok(a.length <= 64)
    assert.match(a, /^[\x21-\x7e]+$/)
    const others = [
      clientToken(POOL, IDS[1], '0', 'on-demand'),
      clientToken(POOL, IDS[0], '1', 'on-demand'),
      clientToken(POOL, IDS[0], '0', 'spot'),
      clientToken('other-pool', IDS[0], '0', 'on-demand'),
      clientToken(POOL, IDS[0], '0', 'on-demand', '/i-0123'),
    ]
    assert.equal(new Set([a, ...others]).size, 6)
    const long = clientToken('p'.repeat(300), 'x'.repeat(300), 'g'.repeat(50), 'spot', 's'.repeat(100))
    assert.ok(long.length <= 64, `${long.length}`)
  })

  it('create twice: the second finds the instance by its labels and does not call RunInstances', async () => {
    const p = makeProvider()
    const spec = specFor(seedTemplate())
    const first = await p.create(spec, op)
    // A new provider object, as after a server restart between "provider asked" and "store updated".
    const again = await makeProvider().create(spec, op)
    assert.equal(again.ref, first.ref)
    assert.equal(runInputs().length, 1)
    const lookups = aws.mock.commandCalls(DescribeInstancesCommand).map((c) => c.args[0].input)
    assert.deepEqual(lookups[1]!.Filters, [
      { Name: `tag:${LABEL_POOL}`, Values: [POOL] },
      { Name: `tag:${LABEL_INSTANCE}`, Values: [IDS[0]] },
      { Name: 'instance-state-name', Values: ['pending', 'running', 'stopping', 'stopped'] },
    ])
  })

  it('a new generation launches a new instance under the same instanceId; the old one is not reused', async () => {
    const p = makeProvider()
    const t = seedTemplate()
    const g1 = await p.create(specFor(t, IDS[0], { [LABEL_GENERATION]: '1' }), op)
    const g2 = await p.create(specFor(t, IDS[0], { [LABEL_GENERATION]: '2' }), op)
    assert.notEqual(g2.ref, g1.ref)
    assert.equal(g2.instanceId, IDS[0])
    const [a, b] = runInputs()
    assert.notEqual(a!.ClientToken, b!.ClientToken)
  })

  it('relaunching a terminated instanceId without a new generation does not get the dead instance back', async () => {
    const p = makeProvider()
    const spec = specFor(seedTemplate())
    const first = await p.create(spec, op)
    await p.destroy(first.ref, op)
    const second = await p.create(spec, op)
    assert.notEqual(second.ref, first.ref)
    assert.equal(second.state, 'pending')
    // Deterministic: the same create again returns that second instance.
    assert.equal((await makeProvider().create(spec, op)).ref, second.ref)
  })
})

describe('list and describe', () => {
  it('list pages through NextToken with the pool tag filter and returns every state', async () => {
    aws.pageSize = 2
    const mine = Array.from({ length: 6 }, (_, i) =>
      aws.add(
        { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: `inst${i}`, [LABEL_TEMPLATE]: 'rstudio' },
        i === 5 ? 'terminated' : 'running',
      ),
    )
    aws.add({ [LABEL_POOL]: 'another-pool', [LABEL_INSTANCE]: 'x' })
    aws.add({ Purpose: 'RStudio' })
    const p = makeProvider()
    const listed = await p.list(op)
    assert.deepEqual(listed.map((i) => i.ref).sort(), [...mine].sort())
    assert.equal(listed.find((i) => i.ref === mine[5])!.state, 'terminated')
    assert.equal(listed.find((i) => i.ref === mine[0])!.instanceId, 'inst0')
    const calls = aws.mock.commandCalls(DescribeInstancesCommand).map((c) => c.args[0].input)
    assert.equal(calls.length, 3)
    for (const c of calls) assert.deepEqual(c.Filters, [{ Name: `tag:${LABEL_POOL}`, Values: [POOL] }])
    assert.deepEqual(
      calls.map((c) => c.NextToken),
      [undefined, '2', '4'],
    )
  })

  it('describe batches 450 refs into 3 calls of at most 200', async () => {
    const refs = Array.from({ length: 450 }, (_, i) => aws.add({ [LABEL_POOL]: POOL, [LABEL_INSTANCE]: `inst${i}` }))
    const p = makeProvider()
    const map = await p.describe(refs, op)
    assert.equal(map.size, 450)
    const calls = aws.mock.commandCalls(DescribeInstancesCommand).map((c) => c.args[0].input)
    assert.deepEqual(
      calls.map((c) => c.InstanceIds!.length),
      [200, 200, 50],
    )
    assert.equal(map.get(refs[449]!)!.instanceId, 'inst449')
  })

  it('describe: unknown and malformed refs are absent (InvalidInstanceID.NotFound is not an error)', async () => {
    const known = aws.add({ [LABEL_POOL]: POOL, [LABEL_INSTANCE]: 'k' })
    const p = makeProvider()
    const map = await p.describe([known, 'i-0123456789abcdef0', 'i-0fedcba9876543210', 'not-an-id', known], op)
    assert.deepEqual([...map.keys()], [known])
    const calls = aws.mock.commandCalls(DescribeInstancesCommand).map((c) => c.args[0].input)
    assert.deepEqual(
      calls.map((c) => c.InstanceIds),
      [[known, 'i-0123456789abcdef0', 'i-0fedcba9876543210'], [known]],
    )
    assert.equal((await p.describe(['i-0123456789abcdef0'], op)).size, 0)
    assert.equal((await p.describe([], op)).size, 0)
  })

  it('maps EC2 states: stopping/stopped → stopped, shutting-down/terminated → terminated', async () => {
    const refs = (['pending', 'running', 'stopping', 'stopped', 'shutting-down', 'terminated'] as const).map((s) =>
      aws.add({ [LABEL_POOL]: POOL }, s),
    )
    const map = await makeProvider().describe(refs, op)
    assert.deepEqual(
      refs.map((r) => map.get(r)!.state),
      ['pending', 'running', 'stopped', 'stopped', 'terminated', 'terminated'],
    )
  })

  it('address from private IP, public DNS or public IP, with the template port', async () => {
    const t = seedTemplate({}, { port: 9000 })
    const cases = {
      'private-ip': /^http:\/\/10\.0\.\d+\.\d+:9000$/,
      'public-dns': /^http:\/\/ec2-3-120-0-\d+\.eu-central-1\.compute\.amazonaws\.com:9000$/,
      'public-ip': /^http:\/\/3\.120\.0\.\d+:9000$/,
    }
    for (const [addressFrom, re] of Object.entries(cases)) {
      const p = makeProvider({ addressFrom })
      assert.deepEqual(p.validateTemplate(t), [])
      const ref = aws.add({ [LABEL_POOL]: POOL, [LABEL_INSTANCE]: 'a', [LABEL_TEMPLATE]: 'rstudio' })
      assert.match((await p.describe([ref], op)).get(ref)!.address!, re, addressFrom)
      assert.match((await p.list(op)).find((i) => i.ref === ref)!.address!, re, addressFrom)
    }
    // Default private IP and port 8787 for a resource of a template this provider has not seen.
    const ref = aws.add({ [LABEL_POOL]: POOL, [LABEL_TEMPLATE]: 'unknown' })
    assert.match((await makeProvider().describe([ref], op)).get(ref)!.address!, /^http:\/\/10\.0\.\d+\.\d+:8787$/)
    // The template may override the provider's choice.
    const p = makeProvider({ addressFrom: 'private-ip' })
    const inst = await p.create(specFor(seedTemplate({ addressFrom: 'public-ip' })), op)
    assert.match(inst.address!, /^http:\/\/3\.120\.0\.\d+:8787$/)
  })
})

describe('errors', () => {
  const denied = (action: string): Error =>
    awsError(
      'UnauthorizedOperation',
      `You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/studiopool/i-0 is not authorized to perform: ${action} on resource: arn:aws:ec2:eu-central-1:123456789012:instance/* because no identity-based policy allows the ${action} action. Encoded authorization failure message: AbCdEf0123456789SECRETLOOKINGBLOB`,
      403,
    )

  it('UnauthorizedOperation → PROVIDER_UNAVAILABLE naming the denied action, not retried', async () => {
    const p = makeProvider()
    aws.failNext('RunInstances', denied('ec2:RunInstances'))
    await assert.rejects(p.create(specFor(seedTemplate()), op), (err: unknown) => {
      assert.ok(err instanceof ProviderError)
      assert.equal(err.code, 'PROVIDER_UNAVAILABLE')
      assert.equal(err.statusCode, 503)
      assert.equal(err.retryable, false)
      assert.match(err.message, /AWS denied ec2:RunInstances/)
      assert.doesNotMatch(err.message, /Encoded|BLOB/)
      return true
    })
    assert.equal(sleeps.length, 0)
  })

  it('names iam:PassRole when that is what was denied', async () => {
    const p = makeProvider()
    aws.failNext('RunInstances', denied('iam:PassRole'))
    await assert.rejects(p.create(specFor(seedTemplate()), op), /AWS denied iam:PassRole/)
  })

  it('expired or missing credentials → PROVIDER_UNAVAILABLE', async () => {
    const p = makeProvider()
    aws.failNext('DescribeInstances', awsError('RequestExpired', 'Request has expired.', 400))
    await assert.rejects(
      p.list(op),
      (err: unknown) =>
        err instanceof ProviderError && err.code === 'PROVIDER_UNAVAILABLE' && /expired/.test(err.message),
    )
    aws.failNext(
      'DescribeInstances',
      Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }),
    )
    await assert.rejects(
      p.list(op),
      (err: unknown) =>
        err instanceof ProviderError &&
        err.code === 'PROVIDER_UNAVAILABLE' &&
        /ec2:DescribeInstances/.test(err.message),
    )
  })

  it('init checks credentials with a dry run; a denial names ec2:DescribeInstances', async () => {
    await makeProvider().init(op)
    const call = aws.mock.commandCalls(DescribeInstancesCommand)[0]!.args[0].input
    assert.equal(call.DryRun, true)
    aws.failNext('DescribeInstances', denied('ec2:DescribeInstances'))
    await assert.rejects(
      makeProvider().init(op),
      (err: unknown) =>
        err instanceof ProviderError &&
        err.code === 'PROVIDER_UNAVAILABLE' &&
        /ec2:DescribeInstances/.test(err.message),
    )
  })

  it('destroy: TerminateInstances; an unknown or already terminated instance resolves', async () => {
    const p = makeProvider()
    const ref = aws.add({ [LABEL_POOL]: POOL })
    await p.destroy(ref, op)
    assert.equal(aws.instances.get(ref)!.state, 'terminated')
    await p.destroy(ref, op)
    await p.destroy('i-0123456789abcdef0', op) // AWS answers InvalidInstanceID.NotFound
    await p.destroy('not-an-ec2-id', op) // never sent
    const sent = aws.mock.commandCalls(TerminateInstancesCommand).map((c) => c.args[0].input.InstanceIds)
    assert.deepEqual(sent, [[ref], [ref], ['i-0123456789abcdef0']])
    aws.failNext('TerminateInstances', denied('ec2:TerminateInstances'))
    await assert.rejects(p.destroy(ref, op), /AWS denied ec2:TerminateInstances/)
  })

  it('stop/start suspend and resume; a one-time spot instance cannot be stopped, with a clear reason', async () => {
    const p = makeProvider()
    assert.equal(p.capabilities.supportsSuspend, true)
    const ref = aws.add({ [LABEL_POOL]: POOL })
    await p.stop(ref, op)
    assert.equal(aws.instances.get(ref)!.state, 'stopped')
    await p.start(ref, op)
    assert.equal(aws.instances.get(ref)!.state, 'pending')
    const spot = await p.create(specFor(seedTemplate({ spot: { enabled: true } }), IDS[1]), op)
    await assert.rejects(p.stop(spot.ref, op), /spot instances launched as one-time requests cannot be suspended/)
    await assert.rejects(p.stop('i-0123456789abcdef0', op), /no longer exists/)
    assert.equal(aws.mock.commandCalls(StopInstancesCommand).length, 3)
  })
})

describe('registry', () => {
  it('loads the ec2 provider lazily through the registry', async () => {
    const { loadProvider } = await import('../../src/providers/registry.js')
    const p = await loadProvider('ec2', {
      poolId: POOL,
      dataDir: '/nonexistent',
      settings: { region: SEED.REGION },
      log: op.log,
    })
    assert.equal(p.name, 'ec2')
    assert.equal(p.capabilities.supportsSuspend, true)
    assert.deepEqual(p.validateTemplate(seedTemplate()), [])
    await p.close()
  })
})

describe('validateTemplate', () => {
  it('accepts the seed template and reports every problem with a path', () => {
    assert.deepEqual(validateTemplate(seedTemplate()), [])
    const problems = validateTemplate(
      seedTemplate({ imageId: 'not-an-ami', securityGroupIds: [], extra: 1, tags: { 'studiopool:pool': 'x' } }),
    )
    assert.ok(
      problems.some((p) => p.includes('/imageId')),
      problems.join('\n'),
    )
    assert.ok(
      problems.some((p) => p.includes('/securityGroupIds')),
      problems.join('\n'),
    )
    assert.ok(
      problems.some((p) => /extra/.test(p)),
      problems.join('\n'),
    )
    assert.deepEqual(validateTemplate(seedTemplate({ tags: { 'studiopool:pool': 'x' } })), [
      'templates.rstudio.settings/tags/studiopool:pool: tag keys starting with aws: or studiopool: are reserved',
    ])
    assert.match(
      validateTemplate(seedTemplate({ tokens: { progressToken: 'x' } })).join(''),
      /set by studiopool for each instance/,
    )
  })

  it('an unknown token in the user-data file is an error at validate time', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs')
    const { join } = await import('node:path')
    const { tmpdir } = await import('node:os')
    const dir = mkdtempSync(join(tmpdir(), 'sp-ec2-'))
    const file = join(dir, 'ud.sh')
    writeFileSync(file, '#!/bin/bash\necho {{{instanceId}}} {{{mystery}}} {{{ account }}}\n')
    const problems = validateTemplate(seedTemplate({ userDataTemplate: file, tokens: { account: '123' } }))
    assert.equal(problems.length, 1, problems.join('\n'))
    assert.match(problems[0]!, /unknown token \{\{\{mystery\}\}\}/)
    assert.match(
      validateTemplate(seedTemplate({ userDataTemplate: join(dir, 'missing.sh') })).join(''),
      /cannot read .*ENOENT/,
    )
    const p = makeProvider()
    await assert.rejects(p.create(specFor(seedTemplate({ userDataTemplate: file })), op), /unknown token/)
    assert.equal(runInputs().length, 0)
  })

  it('invalid provider settings fail at construction with every problem', () => {
    assert.throws(
      () => makeProvider({ addressFrom: 'elastic-ip', describeBatchSize: 5000 }),
      (err: any) => {
        assert.equal(err.code, 'INVALID_REQUEST')
        assert.ok(err.details.length >= 2)
        return true
      },
    )
  })
})
