/**
 * A small in-memory EC2 behind aws-sdk-client-mock, for the ec2 provider's tests. AWS itself cannot
 * be reached from the test environment, so these handlers imitate the parts of EC2 the provider
 * relies on, as AWS documents them:
 * - RunInstances honours ClientToken (same token → the same instance, whatever its state now),
 *   applies TagSpecifications, starts instances `pending`;
 * - DescribeInstances filters by `tag:<key>`, `instance-state-name` and `instance-id`, pages with
 *   MaxResults/NextToken, and fails with InvalidInstanceID.NotFound naming unknown InstanceIds;
 *   `pending` instances become `running` once they have been described (an instance boots meanwhile);
 * - TerminateInstances marks instances terminated (they stay visible, as on AWS for about an hour),
 *   StopInstances/StartInstances move between stopped and pending;
 * - `DryRun: true` answers DryRunOperation.
 */
import {
  CreateTagsCommand,
  DescribeInstancesCommand,
  EC2Client,
  EC2ServiceException,
  RunInstancesCommand,
  StartInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
  type DescribeInstancesCommandInput,
  type Instance,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2'
import { mockClient } from 'aws-sdk-client-mock'

export function awsError(name: string, message = name, status = 400): EC2ServiceException {
  return new EC2ServiceException({
    name,
    $fault: status >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode: status },
    message,
  })
}

interface FakeInstance {
  id: string
  state: 'pending' | 'running' | 'stopping' | 'stopped' | 'shutting-down' | 'terminated'
  tags: Record<string, string>
  clientToken: string | undefined
  input: RunInstancesCommandInput
  privateIp: string
  launchTime: Date
  spot: boolean
}

export class FakeEc2 {
  readonly mock = mockClient(EC2Client)
  readonly instances = new Map<string, FakeInstance>()
  /** Page size when the caller gives no MaxResults smaller than it. */
  pageSize: number
  /** Errors thrown, one per call and in order, before an operation is handled (throttling, capacity, auth). */
  readonly failures = new Map<string, Error[]>()
  /** RunInstances calls that launch, then lose their response (a timeout after AWS accepted the request). */
  lostRunResponses = 0
  /** Operations denied by IAM (see deny()). */
  readonly denied = new Set<string>()
  #seq = 0

  constructor(opts: { pageSize?: number } = {}) {
    this.pageSize = opts.pageSize ?? 1000
    this.mock.on(RunInstancesCommand).callsFake((input: RunInstancesCommandInput) => {
      this.#fail('RunInstances')
      const out = this.run(input)
      if (this.lostRunResponses > 0) {
        this.lostRunResponses--
        throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })
      }
      return out
    })
    this.mock
      .on(DescribeInstancesCommand)
      .callsFake((input: DescribeInstancesCommandInput) => (this.#fail('DescribeInstances'), this.describe(input)))
    this.mock
      .on(TerminateInstancesCommand)
      .callsFake(
        (input: { InstanceIds?: string[] }) => (this.#fail('TerminateInstances'), this.change(input, 'terminated')),
      )
    this.mock
      .on(StopInstancesCommand)
      .callsFake((input: { InstanceIds?: string[] }) => (this.#fail('StopInstances'), this.change(input, 'stopped')))
    this.mock
      .on(StartInstancesCommand)
      .callsFake((input: { InstanceIds?: string[] }) => (this.#fail('StartInstances'), this.change(input, 'pending')))
    this.mock
      .on(CreateTagsCommand)
      .callsFake((input: { Resources?: string[]; Tags?: { Key?: string; Value?: string }[] }) => {
        this.#fail('CreateTags')
        for (const id of input.Resources ?? []) {
          const inst = this.instances.get(id)
          if (!inst) throw awsError('InvalidInstanceID.NotFound', `The instance ID '${id}' does not exist`)
          for (const t of input.Tags ?? []) if (t.Key !== undefined) inst.tags[t.Key] = t.Value ?? ''
        }
        return {}
      })
  }

  /**
   * Every call of `operation` fails as an IAM denial does (UnauthorizedOperation naming the action),
   * until `allow(operation)`.
   */
  deny(operation: string): void {
    this.denied.add(operation)
  }

  allow(operation: string): void {
    this.denied.delete(operation)
  }

  /** Queues errors for the next calls of `operation` (e.g. 'RunInstances'). */
  failNext(operation: string, ...errors: Error[]): void {
    this.failures.set(operation, [...(this.failures.get(operation) ?? []), ...errors])
  }

  #fail(operation: string): void {
    if (this.denied.has(operation)) {
      throw awsError(
        'UnauthorizedOperation',
        `You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/studiopool/i-0abc is not authorized to perform: ec2:${operation} on resource: arn:aws:ec2:eu-central-1:123456789012:instance/* because no identity-based policy allows the ec2:${operation} action. Encoded authorization failure message: AbCdEf0123`,
        403,
      )
    }
    const err = this.failures.get(operation)?.shift()
    if (err) throw err
  }

  restore(): void {
    this.mock.restore()
  }

  /** Adds an instance as if someone else (or an earlier run) had launched it. */
  add(tags: Record<string, string>, state: FakeInstance['state'] = 'running'): string {
    const id = this.#newId()
    this.instances.set(id, {
      id,
      state,
      tags,
      clientToken: undefined,
      input: {} as RunInstancesCommandInput,
      privateIp: `10.0.${this.#seq >> 8}.${this.#seq & 255}`,
      launchTime: new Date(),
      spot: false,
    })
    return id
  }

  #newId(): string {
    this.#seq++
    return `i-${this.#seq.toString(16).padStart(17, '0')}`
  }

  run(input: RunInstancesCommandInput): { Instances: Instance[] } {
    if (input.DryRun) throw awsError('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.', 412)
    if (input.ClientToken) {
      const prior = [...this.instances.values()].find((i) => i.clientToken === input.ClientToken)
      if (prior) return { Instances: [this.#view(prior)] }
    }
    const id = this.#newId()
    const tags: Record<string, string> = {}
    for (const spec of input.TagSpecifications ?? []) {
      if (spec.ResourceType === 'instance') for (const t of spec.Tags ?? []) tags[t.Key!] = t.Value!
    }
    const inst: FakeInstance = {
      id,
      state: 'pending',
      tags,
      clientToken: input.ClientToken,
      input,
      privateIp: `10.0.${this.#seq >> 8}.${this.#seq & 255}`,
      launchTime: new Date(),
      spot: input.InstanceMarketOptions?.MarketType === 'spot',
    }
    this.instances.set(id, inst)
    return { Instances: [this.#view(inst)] }
  }

  #view(i: FakeInstance): Instance {
    const gone = i.state === 'terminated' || i.state === 'shutting-down'
    return {
      InstanceId: i.id,
      State: { Name: i.state, Code: 0 },
      Tags: Object.entries(i.tags).map(([Key, Value]) => ({ Key, Value })),
      PrivateIpAddress: gone ? undefined : i.privateIp,
      PublicIpAddress: gone || i.state === 'stopped' ? undefined : `3.120.0.${this.#seqOf(i) & 255}`,
      PublicDnsName:
        gone || i.state === 'stopped' ? '' : `ec2-3-120-0-${this.#seqOf(i) & 255}.eu-central-1.compute.amazonaws.com`,
      LaunchTime: i.launchTime,
      ...(i.spot ? { InstanceLifecycle: 'spot' as const } : {}),
    }
  }

  #seqOf(i: FakeInstance): number {
    return Number.parseInt(i.id.slice(2), 16)
  }

  #matches(i: FakeInstance, filters: { Name?: string; Values?: string[] }[]): boolean {
    for (const f of filters) {
      const values = f.Values ?? []
      if (f.Name?.startsWith('tag:')) {
        const v = i.tags[f.Name.slice(4)]
        if (v === undefined || !values.includes(v)) return false
      } else if (f.Name === 'instance-state-name') {
        if (!values.includes(i.state)) return false
      } else if (f.Name === 'instance-id') {
        if (!values.includes(i.id)) return false
      } else {
        throw awsError('InvalidParameterValue', `The filter '${f.Name}' is invalid`)
      }
    }
    return true
  }

  describe(input: DescribeInstancesCommandInput): { Reservations: { Instances: Instance[] }[]; NextToken?: string } {
    if (input.DryRun) throw awsError('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.', 412)
    if (input.InstanceIds && input.MaxResults)
      throw awsError(
        'InvalidParameterCombination',
        'The parameter instancesSet cannot be used with the parameter maxResults',
      )
    let found: FakeInstance[]
    if (input.InstanceIds) {
      const bad = input.InstanceIds.filter((id) => !/^i-[0-9a-f]{8,17}$/.test(id))
      if (bad.length) throw awsError('InvalidInstanceID.Malformed', `Invalid id: "${bad[0]}"`)
      const missing = input.InstanceIds.filter((id) => !this.instances.has(id))
      if (missing.length === 1)
        throw awsError('InvalidInstanceID.NotFound', `The instance ID '${missing[0]}' does not exist`)
      if (missing.length > 1)
        throw awsError('InvalidInstanceID.NotFound', `The instance IDs '${missing.join(', ')}' do not exist`)
      found = input.InstanceIds.map((id) => this.instances.get(id)!)
    } else {
      found = [...this.instances.values()]
    }
    found = found.filter((i) => this.#matches(i, input.Filters ?? []))
    const size = Math.min(this.pageSize, input.MaxResults ?? this.pageSize)
    const start = input.NextToken ? Number(input.NextToken) : 0
    const page = found.slice(start, start + size)
    const next = start + size < found.length ? String(start + size) : undefined
    const views = page.map((i) => this.#view(i))
    // An instance that was asked about boots meanwhile.
    for (const i of page) if (i.state === 'pending') i.state = 'running'
    return { Reservations: views.map((v) => ({ Instances: [v] })), ...(next ? { NextToken: next } : {}) }
  }

  change(input: { InstanceIds?: string[] }, to: FakeInstance['state']): Record<string, unknown> {
    const ids = input.InstanceIds ?? []
    const missing = ids.filter((id) => !this.instances.has(id))
    if (missing.length)
      throw awsError('InvalidInstanceID.NotFound', `The instance ID '${missing.join(', ')}' does not exist`)
    for (const id of ids) {
      const i = this.instances.get(id)!
      if (i.state === 'terminated' && to !== 'terminated')
        throw awsError(
          'IncorrectInstanceState',
          `The instance '${id}' is not in a state from which it can be started or stopped.`,
        )
      if (to === 'stopped' && i.spot)
        throw awsError('UnsupportedOperation', `The instance '${id}' is a spot instance and cannot be stopped.`)
      i.state = to
    }
    return {
      [to === 'terminated' ? 'TerminatingInstances' : to === 'stopped' ? 'StoppingInstances' : 'StartingInstances']:
        ids.map((InstanceId) => ({ InstanceId })),
    }
  }
}
