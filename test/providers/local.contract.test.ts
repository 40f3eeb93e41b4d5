import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { endSessionsUnder, LocalProvider } from '../../src/providers/local/index.js'
import { CONTRACT_POOL_ID, providerContract } from '../contract/provider-contract.js'
import { makeLocalDemoTemplate } from '../helpers/template.js'
import { localLeftovers } from './helpers.js'

providerContract({
  name: 'local',
  make: async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'studiopool-local-contract-'))
    const provider = new LocalProvider({
      poolId: CONTRACT_POOL_ID,
      dataDir,
      settings: {},
      log: pino({ level: 'silent' }),
    })
    await provider.init({ log: pino({ level: 'silent' }) })
    return {
      provider,
      // Real processes: the demo app under the server's own node binary.
      template: makeLocalDemoTemplate({ name: 'demo' }),
      cleanup: async () => {
        await provider.close()
        // The contract destroys what it creates; whatever a failed case left is ended here, namespaces too.
        endSessionsUnder(dataDir, { pools: [CONTRACT_POOL_ID], dropFirewall: true })
        rmSync(dataDir, { recursive: true, force: true })
        rmSync(`${dataDir}-sessions`, { recursive: true, force: true })
        assert.deepEqual(localLeftovers(provider.scope), [], 'nothing of the contract pool is left on the host')
      },
    }
  },
  unknownRef: '999999999:1',
  skip: { suspend: 'local processes cannot be suspended (capabilities.supportsSuspend = false)' },
})
