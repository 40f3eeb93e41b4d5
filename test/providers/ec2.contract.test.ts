/**
 * The provider contract (test/contract/provider-contract.ts) against the ec2 provider.
 *
 * AWS cannot be reached from the test environment: the provider runs with its real SDK client
 * (EC2Client), whose `send` aws-sdk-client-mock replaces with a small stateful in-memory EC2
 * (test/providers/ec2-fake-aws.ts: ClientToken idempotency, tag filters, pagination, NotFound).
 * A page size of 2 makes every list and lookup go through NextToken.
 */
import pino from 'pino'
import { CONTRACT_POOL_ID, providerContract } from '../contract/provider-contract.js'
import { createEc2Provider } from '../../src/providers/ec2/index.js'
import { makeTemplate } from '../helpers/template.js'
import { FakeEc2 } from './ec2-fake-aws.js'

const template = makeTemplate({
  name: 'rstudio',
  displayName: 'RStudio',
  description: 'contract template',
  provider: 'ec2',
  minFree: 0,
  startTimeoutMs: 600_000,
  port: 8787,
  healthPath: '/',
  settings: {
    imageId: 'ami-0130bec6e5047f596',
    instanceType: 't2.micro',
    securityGroupIds: ['sg-1234aa12a123ab123'],
    tokens: { registry: 'XXXXXXX.dkr.ecr.eu-central-1.amazonaws.com' },
  },
})

providerContract({
  name: 'ec2 (aws-sdk-client-mock)',
  unknownRef: 'i-0123456789abcdef0',
  make: async () => {
    const aws = new FakeEc2({ pageSize: 2 })
    const provider = createEc2Provider(
      {
        poolId: CONTRACT_POOL_ID,
        dataDir: '/nonexistent',
        settings: { region: 'eu-central-1' },
        log: pino({ level: 'silent' }),
      },
      { sleep: async () => {}, random: () => 0 },
    )
    await provider.init({ log: pino({ level: 'silent' }) })
    return {
      provider,
      template,
      cleanup: async () => {
        await provider.close()
        aws.restore()
      },
    }
  },
})
