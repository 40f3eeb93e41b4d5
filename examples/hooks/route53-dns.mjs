#!/usr/bin/env node
// A studiopool operator hook (docs/hooks.md): a DNS name per session in Route 53, as seed 004's DNS
// plugin did. On session.ready it UPSERTs `<instance id or user slug>.<domain>` pointing at the
// session's host (an A/AAAA record for an IP address, a CNAME for a host name); on session.ended it
// DELETEs it. Reads the event as JSON on stdin; exits non-zero with a message on stderr on failure.
//
//   hooks:
//     - name: dns
//       on: [session.ready, session.ended]
//       command: [node, examples/hooks/route53-dns.mjs]
//       env: { ROUTE53_ZONE_ID: Z0123456789ABCDEFGHIJ, DNS_DOMAIN: sessions.example.org, AWS_REGION: us-east-1 }
//
// Environment: ROUTE53_ZONE_ID and DNS_DOMAIN (required), DNS_NAME_BY=instance|user (default
// instance), DNS_TTL in seconds (default 60); AWS credentials the SDK's usual way (an instance
// role, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY given to the hook's env).
import { isIP } from 'node:net'
import { pathToFileURL } from 'node:url'
import { ChangeResourceRecordSetsCommand, ListResourceRecordSetsCommand, Route53Client } from '@aws-sdk/client-route-53'

/** A DNS label from a user id: lower case, [a-z0-9-], at most 63 characters. */
export function slug(s) {
  return (
    String(s)
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 63) || 'session'
  )
}

/** The settings from the environment; throws a message naming what is missing. */
export function settings(env) {
  const zoneId = env.ROUTE53_ZONE_ID
  const domain = (env.DNS_DOMAIN ?? '').replace(/\.$/, '')
  if (!zoneId || !domain) throw new UsageError('ROUTE53_ZONE_ID and DNS_DOMAIN must be set')
  const by = env.DNS_NAME_BY ?? 'instance'
  if (by !== 'instance' && by !== 'user') throw new UsageError(`DNS_NAME_BY must be instance or user, not ${by}`)
  const ttl = Number(env.DNS_TTL ?? 60)
  if (!Number.isInteger(ttl) || ttl < 0) throw new UsageError(`DNS_TTL must be whole seconds, not ${env.DNS_TTL}`)
  return { zoneId, domain, by, ttl }
}

class UsageError extends Error {}

/** The record set of a session: its name, and (where the host is known) its type and value. */
export function recordFor(event, s) {
  const d = event.data ?? {}
  const label = s.by === 'user' && d.userId ? slug(d.userId) : slug(d.instanceId)
  const host = d.host ?? null
  const type = !host ? null : isIP(host) === 4 ? 'A' : isIP(host) === 6 ? 'AAAA' : 'CNAME'
  return { Name: `${label}.${s.domain}.`, Type: type, TTL: s.ttl, ResourceRecords: host ? [{ Value: host }] : [] }
}

/**
 * What the hook does for one event: the ChangeResourceRecordSets input it sent, or null when there
 * was nothing to do (another event; an ended session whose record is already gone).
 */
export async function handle(event, env, client = new Route53Client({})) {
  const s = settings(env)
  if (event.type !== 'session.ready' && event.type !== 'session.ended') return null
  let record = recordFor(event, s)
  if (event.type === 'session.ended' && !record.Type) {
    // No host in the event (the server restarted since ready): delete what Route 53 has under the name.
    const found = await client.send(
      new ListResourceRecordSetsCommand({ HostedZoneId: s.zoneId, StartRecordName: record.Name, MaxItems: 1 }),
    )
    const r = found.ResourceRecordSets?.[0]
    if (!r || r.Name !== record.Name) return null
    record = { Name: r.Name, Type: r.Type, TTL: r.TTL, ResourceRecords: r.ResourceRecords }
  }
  if (!record.Type) throw new UsageError(`session.ready without a host for ${record.Name}`)
  const action = event.type === 'session.ready' ? 'UPSERT' : 'DELETE'
  const input = {
    HostedZoneId: s.zoneId,
    ChangeBatch: {
      Comment: `studiopool ${event.type} ${event.data?.instanceId ?? ''}`.trim(),
      Changes: [{ Action: action, ResourceRecordSet: record }],
    },
  }
  try {
    await client.send(new ChangeResourceRecordSetsCommand(input))
  } catch (err) {
    // Deleting a record that is not there is what we wanted.
    if (action === 'DELETE' && err?.name === 'InvalidChangeBatch' && /not found/i.test(err.message)) return null
    throw Object.assign(new Error(`${action} ${record.Name} failed: ${err?.name ?? 'Error'}: ${err?.message ?? err}`), {
      cause: err,
    })
  }
  return input
}

/** The command line: the event from stdin; 0 done, 1 Route 53 refused, 2 wrong settings or input. */
export async function main({ stdin = process.stdin, env = process.env, stderr = process.stderr, client } = {}) {
  let text = ''
  for await (const c of stdin) text += c
  try {
    const event = JSON.parse(text)
    const done = await handle(event, env, client)
    if (done)
      stderr.write(
        `route53-dns: ${done.ChangeBatch.Changes[0].Action} ${done.ChangeBatch.Changes[0].ResourceRecordSet.Name}\n`,
      )
    return 0
  } catch (err) {
    stderr.write(
      `route53-dns: ${err instanceof SyntaxError ? `the event on stdin is not JSON: ${err.message}` : err.message}\n`,
    )
    return err instanceof UsageError || err instanceof SyntaxError ? 2 : 1
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) process.exitCode = await main()
