/**
 * The provider contract (test/contract/provider-contract.ts) against a real Slurm 22.05 cluster:
 * a private single-node cluster started for this file (test/helpers/slurm.ts); jobs run the demo
 * app as `nobody`.
 */
import { after, it } from 'node:test'
import { CONTRACT_POOL_ID, providerContract } from '../contract/provider-contract.js'
import { slurmSkipReason, startSlurm, type TestSlurm } from '../helpers/slurm.js'
import { makeSlurmProvider, slurmTemplate } from './slurm-fixture.js'

const skip = slurmSkipReason()
let slurm: TestSlurm | undefined
after(async () => {
  await slurm?.stop()
})

if (skip) {
  it('provider contract: slurm', { skip }, () => {})
} else {
  providerContract({
    name: 'slurm',
    unknownRef: '999999',
    make: async () => {
      slurm = await startSlurm({ cpus: 16 })
      const made = await makeSlurmProvider(slurm, CONTRACT_POOL_ID, { suspend: true })
      return { provider: made.provider, template: slurmTemplate(), cleanup: made.cleanup }
    },
  })
}
