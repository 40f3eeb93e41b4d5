import { Type } from '@sinclair/typebox'
import { WEBHOOK_EVENTS } from '../domain/webhooks.js'

/**
 * `webhooks:` — signed event deliveries (docs/webhooks.md). `secret` may be `env:NAME` or
 * `file:PATH`. Retries back off exponentially from `retryBaseMs` up to `retryMaxMs`; after
 * `maxAttempts` a delivery is `failed` and the next event of that webhook goes out.
 */
export const Webhooks = Type.Array(
  Type.Object(
    {
      name: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' }),
      url: Type.String({ pattern: '^https?://' }),
      secret: Type.String({ minLength: 1 }),
      events: Type.Array(Type.Union(WEBHOOK_EVENTS.map((e) => Type.Literal(e))), { minItems: 1 }),
      maxAttempts: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
      retryBaseMs: Type.Integer({ minimum: 1, default: 1000 }),
      retryMaxMs: Type.Integer({ minimum: 1, default: 3_600_000 }),
      timeoutMs: Type.Integer({ minimum: 1, default: 10_000 }),
    },
    { additionalProperties: false },
  ),
  { default: [] },
)
