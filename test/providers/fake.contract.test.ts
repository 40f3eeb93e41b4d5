import pino from 'pino'
import { FakeProvider } from '../../src/providers/fake/index.js'
import { CONTRACT_POOL_ID, providerContract } from '../contract/provider-contract.js'
import { makeTemplate } from '../helpers/template.js'

providerContract({
  name: 'fake',
  make: async () => {
    const provider = new FakeProvider({ poolId: CONTRACT_POOL_ID, settings: {} })
    await provider.init({ log: pino({ level: 'silent' }) })
    return { provider, template: makeTemplate({ provider: 'fake' }), cleanup: async () => {} }
  },
})

providerContract({
  name: 'fake (slow start, no suspend)',
  make: async () => {
    const provider = new FakeProvider({
      poolId: CONTRACT_POOL_ID,
      settings: { startDelayMs: 50, supportsSuspend: false },
    })
    await provider.init({ log: pino({ level: 'silent' }) })
    return { provider, template: makeTemplate({ provider: 'fake' }), cleanup: async () => {} }
  },
  skip: { suspend: 'configured without stop/start' },
})
