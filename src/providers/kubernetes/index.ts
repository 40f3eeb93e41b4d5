/**
 * The `kubernetes` provider: the only module others import from this folder (architecture.md conventions, hono folder/index.ts).
 */
import type { Provider, ProviderContext } from '../provider.js'
import { KubernetesProvider } from './kubernetes-provider.js'

export { KubernetesProvider, createKubernetesProvider } from './kubernetes-provider.js'
export {
  KUBERNETES_DEFAULTS,
  kubernetesProviderSettingsSchema,
  kubernetesTemplateSettingsSchema,
  parseKubernetesProviderSettings,
  parseKubernetesTemplateSettings,
  userSlug,
  type KubernetesProviderSettings,
  type KubernetesTemplateSettings,
} from './kubernetes-provider-config.js'
export { podManifest, podName, homeClaimName } from './kubernetes-pod.js'
export { claimManifest, networkPolicyManifest } from './kubernetes-homes.js'
export { KubeApiError, type KubeClient } from './kubernetes-client.js'

export function createProvider(ctx: ProviderContext): Provider {
  return new KubernetesProvider(ctx)
}
