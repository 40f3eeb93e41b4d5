import type { Provider, ProviderContext } from '../provider.js'
import { LocalProvider } from './local-provider.js'

export { LocalProvider, refOf, type LocalInstanceRecord } from './local-provider.js'
export { localScope } from './local-isolation.js'
export { endSessionsUnder, type EndSessionsOptions } from './local-cleanup.js'
export {
  localTemplateSettingsSchema,
  localProviderSettingsSchema,
  parseLocalTemplateSettings,
  LOCAL_DEFAULTS,
  type LocalTemplateSettings,
} from './local-provider-config.js'

export function createProvider(ctx: ProviderContext): Provider {
  return new LocalProvider(ctx)
}
