/**
 * The `slurm` provider: the only module others import from this folder (architecture.md conventions, folder/index.ts).
 */
import type { Provider, ProviderContext } from '../provider.js'
import { SlurmProvider } from './slurm-provider.js'

export { SlurmProvider } from './slurm-provider.js'
export { jobToInstance, labelsOfComment } from './slurm-jobs.js'
export { SlurmCli, parseSqueue, parseTimeLeft, SQUEUE_FORMAT, type SlurmJob } from './slurm-cli.js'
export {
  parseSlurmProviderSettings,
  parseSlurmTemplateSettings,
  slurmProviderSettingsSchema,
  slurmTemplateSettingsSchema,
  SLURM_DEFAULTS,
  type SlurmProviderSettings,
  type SlurmTemplateSettings,
} from './slurm-config.js'

export function createProvider(ctx: ProviderContext): Provider {
  return new SlurmProvider(ctx)
}
