import { Type } from '@sinclair/typebox'
import { HOOK_EVENTS, type WebhookEventType } from '../domain/webhooks.js'
import { Duration } from './duration-schema.js'

/**
 * `hooks:` — operator commands run on lifecycle events (docs/hooks.md). A top-level list rather than
 * per template: a hook such as a DNS record is about the platform, and `templates` narrows it when
 * it is about some templates only. `command` is an argv array run without a shell; `env` values may
 * be `env:NAME` or `file:PATH` (resolved at load, never logged). Decoded: `timeout` → `timeoutMs`.
 */
export const Hooks = Type.Array(
  Type.Transform(
    Type.Object(
      {
        name: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' }),
        // Unsafe only types it: TypeBox reads a union mapped from the tuple as never.
        on: Type.Array(Type.Unsafe<WebhookEventType>(Type.Union(HOOK_EVENTS.map((e) => Type.Literal(e)))), {
          minItems: 1,
        }),
        command: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
        timeout: Duration('30s'),
        env: Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String(), { default: {} }),
        /** Only events of these templates (budget events without an instance always match). Empty = all. */
        templates: Type.Array(Type.String(), { default: [] }),
        /** A failed run (non-zero exit, timeout, spawn error) is run again up to this many runs in all. */
        maxAttempts: Type.Integer({ minimum: 1, maximum: 20, default: 1 }),
      },
      { additionalProperties: false },
    ),
  )
    .Decode((h) => ({
      name: h.name,
      on: h.on,
      command: h.command,
      timeoutMs: h.timeout,
      env: h.env,
      templates: h.templates,
      maxAttempts: h.maxAttempts,
    }))
    .Encode((h) => ({ ...h, timeout: h.timeoutMs })),
  { default: [] },
)
