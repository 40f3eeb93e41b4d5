import type { Kysely, Selectable } from 'kysely'
import type { DeliveryStatus, WebhookDelivery } from '../domain/webhooks.js'
import type { Database, WebhookDeliveriesTable } from './tables.js'

/** What the store keeps for webhooks (store.ts `Store.webhooks`), the same Kysely code on both dialects. */
export interface WebhookStore {
  /** Queues `event` for each webhook; an event id already queued for a webhook is left alone (idempotent). */
  enqueue(
    webhooks: readonly string[],
    event: { readonly id: string; readonly type: string; readonly body: string },
    now: number,
  ): Promise<void>
  /**
   * Claims the oldest pending delivery of `webhook` (never a later one: receivers get events in
   * order) when it is due and not claimed, until `now + leaseMs`. One replica wins a row.
   */
  claimNext(webhook: string, now: number, leaseMs: number): Promise<WebhookDelivery | null>
  /** The outcome of an attempt: delivered, or retried at `nextAttemptAt`, or failed for good. */
  recordAttempt(
    seq: number,
    outcome: { status: DeliveryStatus; httpStatus: number | null; error: string | null; nextAttemptAt: number },
    now: number,
  ): Promise<void>
  /** Newest first (seq descending); `beforeSeq` continues after that row (keyset paging). */
  list(filter: DeliveryFilter & { limit: number; beforeSeq?: number }): Promise<WebhookDelivery[]>
  /** How many deliveries match. */
  count(filter: DeliveryFilter): Promise<number>
}

export interface DeliveryFilter {
  readonly webhook?: string
  readonly status?: DeliveryStatus
}

const view = (r: Selectable<WebhookDeliveriesTable>): WebhookDelivery => ({
  seq: Number(r.seq),
  webhook: r.webhook,
  eventId: r.event_id,
  eventType: r.event_type,
  body: r.body,
  status: r.status as DeliveryStatus,
  attempts: Number(r.attempts),
  nextAttemptAt: Number(r.next_attempt_at),
  lastStatus: r.last_status === null ? null : Number(r.last_status),
  lastError: r.last_error,
  createdAt: Number(r.created_at),
  deliveredAt: r.delivered_at === null ? null : Number(r.delivered_at),
})

export function webhookStore(db: () => Kysely<Database>): WebhookStore {
  return {
    async enqueue(webhooks, event, now) {
      if (webhooks.length === 0) return
      await db()
        .insertInto('webhook_deliveries')
        .values(
          webhooks.map((w) => ({
            webhook: w,
            event_id: event.id,
            event_type: event.type,
            body: event.body,
            status: 'pending',
            attempts: 0,
            next_attempt_at: now,
            claimed_until: 0,
            last_status: null,
            last_error: null,
            created_at: now,
            delivered_at: null,
          })),
        )
        .onConflict((oc) => oc.columns(['webhook', 'event_id']).doNothing())
        .execute()
    },
    async claimNext(webhook, now, leaseMs) {
      const head = await db()
        .selectFrom('webhook_deliveries')
        .selectAll()
        .where('webhook', '=', webhook)
        .where('status', '=', 'pending')
        .orderBy('seq')
        .limit(1)
        .executeTakeFirst()
      if (!head || Number(head.next_attempt_at) > now || Number(head.claimed_until) > now) return null
      const won = await db()
        .updateTable('webhook_deliveries')
        .set({ claimed_until: now + leaseMs })
        .where('seq', '=', head.seq)
        .where('status', '=', 'pending')
        .where('claimed_until', '=', head.claimed_until)
        .executeTakeFirst()
      return Number(won.numUpdatedRows) === 1 ? view(head) : null
    },
    async recordAttempt(seq, o, now) {
      await db()
        .updateTable('webhook_deliveries')
        .set((eb) => ({
          status: o.status,
          attempts: eb('attempts', '+', 1),
          next_attempt_at: o.nextAttemptAt,
          claimed_until: 0,
          last_status: o.httpStatus,
          last_error: o.error,
          delivered_at: o.status === 'delivered' ? now : null,
        }))
        .where('seq', '=', seq)
        .execute()
    },
    async list(f) {
      let q = db().selectFrom('webhook_deliveries').selectAll()
      if (f.webhook) q = q.where('webhook', '=', f.webhook)
      if (f.status) q = q.where('status', '=', f.status)
      if (f.beforeSeq !== undefined) q = q.where('seq', '<', f.beforeSeq)
      const rows = await q.orderBy('seq', 'desc').limit(f.limit).execute()
      return rows.map(view)
    },
    async count(f) {
      let q = db()
        .selectFrom('webhook_deliveries')
        .select((eb) => eb.fn.countAll<number>().as('n'))
      if (f.webhook) q = q.where('webhook', '=', f.webhook)
      if (f.status) q = q.where('status', '=', f.status)
      return Number((await q.executeTakeFirstOrThrow()).n)
    },
  }
}
