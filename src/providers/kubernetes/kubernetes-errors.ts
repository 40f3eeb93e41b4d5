import { ProviderError } from '../../domain/errors.js'
import type { KubeApiError } from './kubernetes-client.js'

export const NAME = 'kubernetes'

/**
 * An API failure at the provider's edge as a ProviderError (architecture.md conventions): the API
 * server away is retryable and `PROVIDER_UNAVAILABLE`; an object it refused (422, 400) is a
 * configuration problem, never retried; 401/403 point at the Role; conflicts, throttling and
 * server errors are retryable.
 */
export function translateKubeError(e: KubeApiError): ProviderError {
  if (e.unreachable)
    return new ProviderError(NAME, e.message, { cause: e, retryable: true, code: 'PROVIDER_UNAVAILABLE' })
  if (e.status === 422 || e.status === 400)
    return new ProviderError(NAME, `the API server refused the object: ${e.message}`, { cause: e, kind: 'config' })
  if (e.status === 401 || e.status === 403)
    return new ProviderError(
      NAME,
      `${e.message} (check the Role of studiopool's service account: docs/kubernetes.md)`,
      {
        cause: e,
        code: 'PROVIDER_UNAVAILABLE',
        kind: 'auth',
      },
    )
  return new ProviderError(NAME, e.message, {
    cause: e,
    retryable: e.status === 409 || e.status === 429 || e.status >= 500,
  })
}
