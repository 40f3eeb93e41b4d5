/**
 * The provider contract (test/contract/provider-contract.ts) against a real Docker Engine: a
 * private dockerd started for this file (test/helpers/docker.ts), containers of the imported
 * test image running the host's node.
 */
import { after, it } from 'node:test'
import pino from 'pino'
import { DockerProvider } from '../../src/providers/docker/index.js'
import { CONTRACT_POOL_ID, providerContract } from '../contract/provider-contract.js'
import { dockerSkipReason, startDockerd, testAppSettings, type TestDockerd } from '../helpers/docker.js'
import { makeTemplate } from '../helpers/template.js'

const skip = dockerSkipReason()
let docker: TestDockerd | undefined
after(async () => {
  await docker?.stop()
})

if (skip) {
  it('provider contract: docker', { skip }, () => {})
} else {
  providerContract({
    name: 'docker',
    unknownRef: `t1/${'0'.repeat(64)}`,
    make: async () => {
      docker = await startDockerd()
      const log = pino({ level: 'silent' })
      const provider = new DockerProvider({
        poolId: CONTRACT_POOL_ID,
        dataDir: '/nonexistent',
        settings: { hosts: [{ name: 't1', url: docker.url }] },
        log,
      })
      await provider.init({ log })
      return {
        provider,
        template: makeTemplate({ name: 'demo', provider: 'docker', minFree: 0, settings: testAppSettings() }),
        cleanup: async () => {
          await provider.close()
        },
      }
    },
  })
}
