import type { Provider, ProviderContext } from '../provider.js'
import { FakeProvider } from './fake-provider.js'

export {
  FakeProvider,
  FakeCloud,
  parseFakeSettings,
  type FakeMethod,
  type FakeResource,
  type FakeSettings,
} from './fake-provider.js'

export function createProvider(ctx: ProviderContext): Provider {
  return new FakeProvider(ctx)
}
