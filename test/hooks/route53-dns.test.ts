/**
 * The Route 53 hook example (examples/hooks/route53-dns.mjs, docs/hooks.md) against
 * aws-sdk-client-mock: the exact ChangeResourceRecordSets inputs for session.ready (UPSERT) and
 * session.ended (DELETE, also when the event has no host and the record is looked up), and a
 * throttling error: a non-zero exit with a message that names the record and the error.
 */
import { afterEach, test } from 'node:test'
import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { mockClient } from 'aws-sdk-client-mock'
import { ChangeResourceRecordSetsCommand, ListResourceRecordSetsCommand, Route53Client } from '@aws-sdk/client-route-53'
import { REPO } from '../helpers/server-process.js'

interface Example {
  main(o: {
    stdin: Readable
    env: Record<string, string>
    stderr: { write(s: string): void }
    client?: Route53Client
  }): Promise<number>
}
const example = (await import(pathToFileURL(join(REPO, 'examples/hooks/route53-dns.mjs')).href)) as Example

const r53 = mockClient(Route53Client)
afterEach(() => r53.reset())

const ENV = { ROUTE53_ZONE_ID: 'Z0123456789ABC', DNS_DOMAIN: 'sessions.example.org', AWS_REGION: 'us-east-1' }
const ready = {
  id: 'session.ready.k3x9w2p8q7r6s5t4u3v2.0',
  type: 'session.ready',
  at: '2026-12-02T12:00:00.000Z',
  data: { instanceId: 'k3x9w2p8q7r6s5t4u3v2', userId: 'Ada.Lovelace', template: 'rstudio', host: '10.1.2.3' },
}
const ended = {
  id: 'session.ended.k3x9w2p8q7r6s5t4u3v2',
  type: 'session.ended',
  at: '2026-12-02T13:00:00.000Z',
  data: { ...ready.data, reason: 'idle' },
}

async function run(event: unknown, env: Record<string, string> = ENV) {
  let err = ''
  const code = await example.main({
    stdin: Readable.from([JSON.stringify(event)]),
    env,
    stderr: { write: (s: string) => void (err += s) },
    client: new Route53Client({ region: 'us-east-1' }),
  })
  return { code, err }
}

test('session.ready UPSERTs an A record named after the instance', async () => {
  r53
    .on(ChangeResourceRecordSetsCommand)
    .resolves({ ChangeInfo: { Id: 'C1', Status: 'PENDING', SubmittedAt: new Date() } })
  const r = await run(ready)
  assert.equal(r.code, 0, r.err)
  assert.deepEqual(r53.commandCalls(ChangeResourceRecordSetsCommand)[0]!.args[0].input, {
    HostedZoneId: 'Z0123456789ABC',
    ChangeBatch: {
      Comment: 'studiopool session.ready k3x9w2p8q7r6s5t4u3v2',
      Changes: [
        {
          Action: 'UPSERT',
          ResourceRecordSet: {
            Name: 'k3x9w2p8q7r6s5t4u3v2.sessions.example.org.',
            Type: 'A',
            TTL: 60,
            ResourceRecords: [{ Value: '10.1.2.3' }],
          },
        },
      ],
    },
  })
  assert.equal(r.err, 'route53-dns: UPSERT k3x9w2p8q7r6s5t4u3v2.sessions.example.org.\n')
})

test('session.ended DELETEs the same record; by user, a host name is a CNAME', async () => {
  r53.on(ChangeResourceRecordSetsCommand).resolves({})
  const env = { ...ENV, DNS_NAME_BY: 'user', DNS_TTL: '30' }
  const host = { ...ended, data: { ...ended.data, host: 'ip-10-1-2-3.ec2.internal' } }
  assert.equal((await run(host, env)).code, 0)
  assert.deepEqual(r53.commandCalls(ChangeResourceRecordSetsCommand)[0]!.args[0].input, {
    HostedZoneId: 'Z0123456789ABC',
    ChangeBatch: {
      Comment: 'studiopool session.ended k3x9w2p8q7r6s5t4u3v2',
      Changes: [
        {
          Action: 'DELETE',
          ResourceRecordSet: {
            Name: 'ada-lovelace.sessions.example.org.',
            Type: 'CNAME',
            TTL: 30,
            ResourceRecords: [{ Value: 'ip-10-1-2-3.ec2.internal' }],
          },
        },
      ],
    },
  })
})

test('an ended event without a host deletes what Route 53 has under the name, or nothing', async () => {
  const record = {
    Name: 'k3x9w2p8q7r6s5t4u3v2.sessions.example.org.',
    Type: 'A' as const,
    TTL: 60,
    ResourceRecords: [{ Value: '10.9.9.9' }],
  }
  r53.on(ListResourceRecordSetsCommand).resolves({ ResourceRecordSets: [record], IsTruncated: false, MaxItems: 1 })
  r53.on(ChangeResourceRecordSetsCommand).resolves({})
  const noHost = { ...ended, data: { instanceId: ended.data.instanceId, reason: 'idle' } }
  assert.equal((await run(noHost)).code, 0)
  assert.deepEqual(r53.commandCalls(ListResourceRecordSetsCommand)[0]!.args[0].input, {
    HostedZoneId: 'Z0123456789ABC',
    StartRecordName: record.Name,
    MaxItems: 1,
  })
  assert.deepEqual(r53.commandCalls(ChangeResourceRecordSetsCommand)[0]!.args[0].input.ChangeBatch!.Changes, [
    { Action: 'DELETE', ResourceRecordSet: record },
  ])
  r53.reset()
  r53.on(ListResourceRecordSetsCommand).resolves({ ResourceRecordSets: [], IsTruncated: false, MaxItems: 1 })
  assert.equal((await run(noHost)).code, 0)
  assert.equal(r53.commandCalls(ChangeResourceRecordSetsCommand).length, 0, 'nothing to delete')
})

test('throttling: a non-zero exit and a message naming the record and the error', async () => {
  r53
    .on(ChangeResourceRecordSetsCommand)
    .rejects(Object.assign(new Error('Rate exceeded'), { name: 'Throttling', $metadata: { httpStatusCode: 400 } }))
  const r = await run(ready)
  assert.equal(r.code, 1)
  assert.equal(
    r.err,
    'route53-dns: UPSERT k3x9w2p8q7r6s5t4u3v2.sessions.example.org. failed: Throttling: Rate exceeded\n',
  )
})

test('wrong settings or input: exit 2 and what is wrong, no call', async () => {
  assert.deepEqual(await run(ready, { DNS_DOMAIN: 'x.org' }), {
    code: 2,
    err: 'route53-dns: ROUTE53_ZONE_ID and DNS_DOMAIN must be set\n',
  })
  const r = await example.main({
    stdin: Readable.from(['not json']),
    env: ENV,
    stderr: { write: () => {} },
  })
  assert.equal(r, 2)
  assert.equal(r53.calls().length, 0)
})

test('other events are left alone', async () => {
  assert.equal((await run({ ...ready, type: 'budget.warning' })).code, 0)
  assert.equal(r53.calls().length, 0)
})
