import { createHmac, timingSafeEqual } from 'node:crypto'

/** The events a webhook can subscribe to (docs/webhooks.md). */
export const WEBHOOK_EVENTS = [
  'session.ready',
  'session.ended',
  'budget.warning',
  'budget.exceeded',
  'budget.stop-scheduled',
  'budget.stopped',
] as const
export type WebhookEventType = (typeof WEBHOOK_EVENTS)[number]

/** The events an operator hook can run on (docs/hooks.md): the webhooks' names, one event hub for both. */
export const HOOK_EVENTS = WEBHOOK_EVENTS

/** One event, as the receiver gets it (the JSON body). `id` is stable: use it to drop duplicates. */
export interface WebhookEvent {
  readonly id: string
  readonly type: WebhookEventType
  /** ISO time the event happened. */
  readonly at: string
  readonly data: Readonly<Record<string, unknown>>
}

export type DeliveryStatus = 'pending' | 'delivered' | 'failed'

/** One event for one webhook, as the store keeps it (the delivery log). */
export interface WebhookDelivery {
  readonly seq: number
  readonly webhook: string
  readonly eventId: string
  readonly eventType: string
  readonly body: string
  readonly status: DeliveryStatus
  readonly attempts: number
  readonly nextAttemptAt: number
  readonly lastStatus: number | null
  readonly lastError: string | null
  readonly createdAt: number
  readonly deliveredAt: number | null
}

/** The signature header and how it is built: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. */
export const SIGNATURE_HEADER = 'studiopool-signature'
export const EVENT_ID_HEADER = 'studiopool-event-id'
export const EVENT_TYPE_HEADER = 'studiopool-event'

export function signWebhook(secret: string, body: string, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex')
  return `t=${unixSeconds},v1=${mac}`
}

/**
 * What a receiver runs: true when `header` is a valid signature of `body` under `secret`, made
 * within `toleranceSeconds` of `nowSeconds` (replays of old deliveries fail). Constant-time.
 */
export function verifyWebhook(
  secret: string,
  header: string | undefined | null,
  body: string,
  nowSeconds: number = Math.floor(Date.now() / 1000),
  toleranceSeconds = 300,
): boolean {
  if (!header) return false
  const parts = new Map(header.split(',').map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]))
  const t = Number(parts.get('t'))
  const given = parts.get('v1') ?? ''
  if (!Number.isInteger(t) || Math.abs(nowSeconds - t) > toleranceSeconds || !/^[0-9a-f]{64}$/.test(given)) return false
  const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest()
  return timingSafeEqual(expected, Buffer.from(given, 'hex'))
}

/** Delay before attempt `attempts + 1` after `attempts` failures: base·2^(attempts−1), capped. */
export function retryDelayMs(attempts: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, attempts - 1))
}
