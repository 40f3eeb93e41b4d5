import { createHmac, createSecretKey, type KeyObject } from 'node:crypto'

/**
 * The per-instance app token (architecture.md contract 5): derived, not stored, so that the gateway (any
 * replica, any role) and the pool compute the same value from the gateway secret without a store
 * round trip. A new generation (a replacement) gets a new token.
 */
export function deriveAppToken(secret: string, instanceId: string, generation: number): string {
  return createHmac('sha256', keyOf(secret))
    .update(`studiopool-app-token\0${instanceId}\0${generation}`)
    .digest('base64url')
}

/** The secret imported once as a KeyObject (a string key is imported anew by every createHmac, ~8× the MAC's cost). */
const keys = new Map<string, KeyObject>()
function keyOf(secret: string): KeyObject {
  let k = keys.get(secret)
  if (!k) {
    if (keys.size > 16) keys.clear()
    keys.set(secret, (k = createSecretKey(Buffer.from(secret, 'utf8'))))
  }
  return k
}
