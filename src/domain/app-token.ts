import { createHmac } from 'node:crypto'

/**
 * The per-instance app token (architecture.md contract 5): derived, not stored, so that the gateway (any
 * replica, any role) and the pool compute the same value from the gateway secret without a store
 * round trip. A new generation (a replacement) gets a new token.
 */
export function deriveAppToken(secret: string, instanceId: string, generation: number): string {
  return createHmac('sha256', secret).update(`studiopool-app-token\0${instanceId}\0${generation}`).digest('base64url')
}
