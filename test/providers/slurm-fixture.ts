/** Shared pieces of the Slurm tests: a provider on a test cluster and a template running the demo app. */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import type { TemplateConfig } from '../../src/config/types.js'
import { DEMO_APP_SCRIPT } from '../../src/demo-app/index.js'
import { SlurmProvider } from '../../src/providers/slurm/index.js'
import { SLURM_TEST_USER, type TestSlurm } from '../helpers/slurm.js'
import { makeTemplate } from '../helpers/template.js'

export const silent = pino({ level: 'silent' })

/** The demo app as the job's app: it binds the PORT and HOST the wrapper gives it. */
export function slurmTemplate(
  settings: Record<string, unknown> = {},
  overrides: Partial<TemplateConfig> = {},
): TemplateConfig {
  return makeTemplate({
    name: 'demo',
    provider: 'slurm',
    minFree: 0,
    settings: {
      script: `exec ${process.execPath} ${DEMO_APP_SCRIPT}`,
      user: SLURM_TEST_USER,
      warmUser: SLURM_TEST_USER,
      hostCommand: 'echo 127.0.0.1',
      ...settings,
    },
    ...overrides,
  })
}

export interface MadeProvider {
  provider: SlurmProvider
  dataDir: string
  cleanup: () => Promise<void>
}

export async function makeSlurmProvider(
  slurm: TestSlurm,
  poolId: string,
  settings: Record<string, unknown> = {},
  dataDir = mkdtempSync(join(tmpdir(), 'studiopool-slurm-data-')),
): Promise<MadeProvider> {
  const provider = new SlurmProvider({
    poolId,
    dataDir,
    settings: { env: slurm.env, pollInterval: 300, runAs: 'uid', ...settings },
    log: silent,
  })
  await provider.init({ log: silent })
  return {
    provider,
    dataDir,
    cleanup: async () => {
      await provider.close()
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
}
