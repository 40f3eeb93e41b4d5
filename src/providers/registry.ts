import { suggestion } from '../config/explain.js'
import type { Provider, ProviderContext } from './provider.js'

/**
 * name → lazy import, so that the AWS SDK loads only when a template uses `ec2`.
 * The only place outside a provider's folder that names providers.
 */
const loaders: Record<string, () => Promise<{ createProvider: (ctx: ProviderContext) => Provider }>> = {
  local: () => import('./local/index.js'),
  fake: () => import('./fake/index.js'),
  ec2: () => import('./ec2/index.js'),
  docker: () => import('./docker/index.js'),
  slurm: () => import('./slurm/index.js'),
  kubernetes: () => import('./kubernetes/index.js'),
}

export const PROVIDER_NAMES = Object.keys(loaders)

export async function loadProvider(name: string, ctx: ProviderContext): Promise<Provider> {
  const load = loaders[name]
  if (!load)
    throw new Error(
      `unknown provider "${name}"${suggestion(name, PROVIDER_NAMES)} (known: ${PROVIDER_NAMES.join(', ')})`,
    )
  const mod = await load()
  return mod.createProvider(ctx)
}
