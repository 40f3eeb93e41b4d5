/**
 * The `docker` provider: the only module others import from this folder (architecture.md conventions, hono folder/index.ts).
 */
import type { Provider, ProviderContext } from '../provider.js'
import { DockerProvider } from './docker-provider.js'

export { DockerProvider, createDockerProvider, toDockerLabelKey, fromDockerLabels } from './docker-provider.js'
export { DockerClient, DockerApiError, API_VERSION, parseDockerUrl, splitImage } from './docker-client.js'
export {
  dockerProviderSettingsSchema,
  dockerTemplateSettingsSchema,
  DOCKER_DEFAULTS,
  parseDockerProviderSettings,
  parseDockerTemplateSettings,
  parseSize,
  userSlug,
  type DockerHost,
  type DockerProviderSettings,
  type DockerTemplateSettings,
} from './docker-provider-config.js'

export function createProvider(ctx: ProviderContext): Provider {
  return new DockerProvider(ctx)
}
