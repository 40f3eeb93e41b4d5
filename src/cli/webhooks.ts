import { Command } from 'commander'
import { StudiopoolClient } from '../client/index.js'

interface Opts {
  url: string
  key?: string
  json?: boolean
  webhook?: string
  status?: string
  limit: string
}

interface DeliveryOut {
  seq: number
  webhook: string
  event: string
  eventId: string
  status: string
  attempts: number
  lastStatus: number | null
  lastError: string | null
  createdAt: string
  nextAttemptAt: string | null
}

/** `studiopool webhooks deliveries [--webhook W] [--status S]`: the delivery log (admin), newest first. */
export function webhooksCommand(): Command {
  const webhooks = new Command('webhooks').description('signed webhooks: the delivery log (admin)')
  webhooks
    .command('deliveries', { isDefault: true })
    .description('deliveries, newest first: status, attempts, the last answer or error')
    .option('--url <url>', 'server URL (env STUDIOPOOL_URL)', process.env.STUDIOPOOL_URL ?? 'http://127.0.0.1:8080')
    .option('--key <key>', 'API key (default: env STUDIOPOOL_KEY; an admin key)')
    .option('--json', 'machine-readable output')
    .option('-w, --webhook <name>', 'only this webhook')
    .option('-s, --status <status>', 'pending, delivered or failed')
    .option('-n, --limit <n>', 'rows (0: all of them, page after page)', '50')
    .action(async (o: Opts) => {
      const want = Number(o.limit) || Infinity
      const c = new StudiopoolClient({ url: o.url, key: o.key ?? process.env.STUDIOPOOL_KEY })
      const deliveries: DeliveryOut[] = []
      const q = { webhook: o.webhook, status: o.status, limit: Math.min(want, 1000) }
      for await (const d of c.eachWebhookDelivery(q)) if (deliveries.push(d) >= want) break
      const r = { deliveries }
      if (o.json) return void process.stdout.write(`${JSON.stringify(r, null, 2)}\n`)
      const lines = r.deliveries.map(
        (d) =>
          `${d.seq}\t${d.webhook}\t${d.event}\t${d.status}\t${d.attempts}\t${d.lastStatus ?? '-'}\t${d.lastError ?? ''}`,
      )
      process.stdout.write(`${['seq\twebhook\tevent\tstatus\tattempts\tlast\terror', ...lines].join('\n')}\n`)
      if (!r.deliveries.length) process.stdout.write('(none)\n')
    })
  return webhooks
}
