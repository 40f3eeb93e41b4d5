/**
 * The `ec2` provider: the only module others import from this folder (architecture.md conventions, hono folder/index.ts).
 * The registry loads it lazily, so the AWS SDK is loaded only when a template uses `ec2`.
 */
import type { Provider, ProviderContext } from '../provider.js'
import { Ec2Provider } from './ec2-provider.js'

export {
  Ec2Provider,
  createEc2Provider,
  clientToken,
  LABEL_GENERATION,
  DEFAULT_PORT,
  type Ec2ProviderDeps,
} from './ec2-provider.js'
export type { Ec2Api } from './ec2-client.js'
export {
  Ec2ProviderSettingsSchema,
  Ec2TemplateSettingsSchema,
  EC2_PROVIDER_DEFAULTS,
  DEFAULT_USER_DATA_TEMPLATE,
  BUILTIN_TOKENS,
  parseTemplateSettings,
  parseProviderSettings,
  validateTemplate,
  type Ec2ProviderSettings,
  type Ec2TemplateSettings,
} from './ec2-provider-config.js'

export function createProvider(ctx: ProviderContext): Provider {
  return new Ec2Provider(ctx)
}
