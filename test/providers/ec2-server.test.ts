/**
 * Issue 9 through the real server (a listening socket, the seed's command protocol) with the ec2
 * provider on its real SDK client, whose `send` aws-sdk-client-mock answers (./ec2-fake-aws.ts):
 * - item 2: RunInstances denied by IAM → the breaker opens at the first failure, REQUEST_RSTUDIO
 *   answers 503 PROVIDER_UNAVAILABLE naming ec2:RunInstances with Retry-After and launches nothing,
 *   /readyz, the templates list and the metric show it; allowed again → the re-probe closes it;
 * - item 6: the user data's progress URL is the instance callback URL; GET_STATUS keyName is the key pair;
 * - item 7: a claimed warm instance gets its owner by CreateTags, in the background: a denied
 *   CreateTags does not fail or delay the claim.
 * Both stores.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { RunInstancesCommand, type RunInstancesCommandInput } from '@aws-sdk/client-ec2'
import { call, command, startServer, type TestServer } from '../api/helpers.js'
import { dropSchemas } from '../helpers/pg.js'
import { waitFor } from '../helpers/wait.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { fetchLogin } from '../web/helpers.js'
import { FakeEc2 } from './ec2-fake-aws.js'

after(dropSchemas)

const ARENA = 'arena-requester-key-0123456789'
const YAML = `
pool: { id: seed-pool, maxInstances: 5 }
dashboard: { login: dev, admins: [ops] }
server: { instanceCallbackUrl: "http://10.0.0.10:8080" }
providers: { ec2: { region: eu-central-1 } }
templates:
  rstudio:
    provider: ec2
    minFree: 1
    maxInstances: 5
    port: 8787
    startTimeout: 15m
    ec2: { imageId: ami-0130bec6e5047f596, instanceType: t2.micro, keyName: LambdaInstance, securityGroupIds: [sg-1234aa12a123ab123] }
`

for (const kind of STORE_KINDS) {
  describe(`ec2 through the server, on ${kind.name}`, () => {
    let aws: FakeEc2
    let s: TestServer
    before(async () => {
      aws = new FakeEc2()
      aws.deny('RunInstances')
      s = await startServer(kind.name, YAML, { ARENA_POOL_SERVICE_KEY: ARENA })
    })
    after(async () => {
      await s?.close()
      aws.restore()
    })

    test('RunInstances denied: 503 PROVIDER_UNAVAILABLE naming the action, with Retry-After, nothing launched; shown in /readyz, templates and metrics; a re-probe closes the breaker', async () => {
      const readyz = await waitFor('the breaker to open (readyz)', async () => {
        const r = await call(s.url, 'GET', '/readyz')
        return /unavailable: .*ec2:RunInstances/.test(r.json?.checks?.['template:rstudio'] ?? '') ? r : undefined
      })
      assert.match(readyz.json.checks['template:rstudio'], /AWS denied ec2:RunInstances/)
      const r = await command(s.url, ARENA, 'REQUEST_RSTUDIO', { userId: 'student-1' }, '/')
      assert.equal(r.status, 503, r.text)
      assert.equal(r.json.error.code, 'PROVIDER_UNAVAILABLE')
      assert.match(r.json.error.message, /ec2:RunInstances/)
      assert.ok(Number(r.headers['retry-after']) >= 1, 'Retry-After')
      assert.equal(aws.instances.size, 0, 'nothing was launched')
      assert.equal(
        await s.store.findLive('student-1', 'rstudio'),
        undefined,
        'nothing was created or queued for the request',
      )
      const rows = await s.store.listInstances({})
      assert.ok(rows.length <= 3, `failed rows do not pile up (${rows.length})`)
      const templates = await call(s.url, 'GET', '/api/v1/templates', { key: s.adminKey })
      const t = templates.json.templates.find((x: { name: string }) => x.name === 'rstudio')
      assert.equal(t.available, false)
      assert.match(t.unavailableReason, /ec2:RunInstances/)
      const metrics = await call(s.url, 'GET', '/metrics', { key: s.adminKey })
      assert.match(metrics.text, /studiopool_template_unavailable\{template="rstudio"\} 1/)
      const cookie = await fetchLogin(s.url, 'ops')
      const admin = await call(s.url, 'GET', '/admin', { headers: { cookie, accept: 'text/html' } })
      assert.equal(admin.status, 200)
      assert.match(
        admin.text,
        /title="[^"]*AWS denied ec2:RunInstances[^"]*">unavailable</,
        'the admin dashboard shows the template unavailable with the cause',
      )

      // The operator fixes the policy: the worker's re-probe (after the backoff) launches, the breaker closes.
      aws.allow('RunInstances')
      await waitFor(
        'the breaker to close',
        async () => (await call(s.url, 'GET', '/readyz')).json.checks['template:rstudio'] === 'ok',
        30_000,
        100,
      )
      assert.match(
        (await call(s.url, 'GET', '/metrics', { key: s.adminKey })).text,
        /studiopool_template_unavailable\{template="rstudio"\} 0/,
      )
      await waitFor('the warm instance to be launched', () => aws.instances.size >= 1)
    })

    test('the user data posts progress to the instance callback URL; the claimed warm instance is tagged with its owner; GET_STATUS keyName is the key pair', async () => {
      const runs = aws.mock.commandCalls(RunInstancesCommand).map((c) => c.args[0].input as RunInstancesCommandInput)
      const launched = runs.find((i) => i.UserData)!
      const script = Buffer.from(launched.UserData!, 'base64').toString('utf8')
      assert.match(script, /http:\/\/10\.0\.0\.10:8080\/api\/v1\/instances\/[a-z2-7]{20}\/progress/)
      assert.doesNotMatch(script, /127\.0\.0\.1:\d+\/api\/v1\/instances/, 'the progress URL is not loopback')

      const r = await command(s.url, ARENA, 'REQUEST_RSTUDIO', { userId: 'student-1' }, '/')
      assert.equal(r.status, 200, r.text)
      const id = r.json.instanceId as string
      const row = (await s.store.getInstance(id))!
      assert.ok(row.providerRef, 'the user got the launched warm instance (still starting), not a cold start')
      const ec2 = await waitFor('CreateTags with the owner', () => {
        const inst = aws.instances.get(row.providerRef!)
        return inst?.tags['studiopool:owner'] === 'student-1' ? inst : undefined
      })
      assert.equal(ec2.tags['studiopool:requester'], 'arena')
      assert.equal(ec2.tags['studiopool:instance'], id)
      assert.equal(ec2.tags['studiopool:pool'], 'seed-pool')

      const st = await command(s.url, ARENA, 'GET_STATUS', { instanceId: id, userId: 'student-1' }, '/')
      assert.equal(st.status, 200, st.text)
      assert.equal(st.json.instance.keyName, 'LambdaInstance', 'the seed meaning: the EC2 key pair')
      assert.equal(st.json.instance.requesterKey, 'arena')

      // CreateTags denied: the claim is not held up and does not fail.
      aws.deny('CreateTags')
      await waitFor(
        'the next warm instance',
        async () =>
          (await s.store.listInstances({ template: 'rstudio', assigned: false, states: ['starting', 'ready'] }))
            .length >= 1,
      )
      const t0 = Date.now()
      const r2 = await command(s.url, ARENA, 'REQUEST_RSTUDIO', { userId: 'student-2' }, '/')
      assert.equal(r2.status, 200, r2.text)
      assert.ok(Date.now() - t0 < 5000)
      assert.equal((await s.store.getInstance(r2.json.instanceId))!.ownerId, 'student-2')
    })
  })
}
