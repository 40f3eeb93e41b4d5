import {
  CreateTagsCommand,
  DescribeInstancesCommand,
  EC2Client,
  RunInstancesCommand,
  StartInstancesCommand,
  StopInstancesCommand,
  TerminateInstancesCommand,
} from '@aws-sdk/client-ec2'
import type {
  CreateTagsCommandInput,
  CreateTagsCommandOutput,
  DescribeInstancesCommandInput,
  DescribeInstancesCommandOutput,
  RunInstancesCommandInput,
  RunInstancesCommandOutput,
  StartInstancesCommandInput,
  StartInstancesCommandOutput,
  StopInstancesCommandInput,
  StopInstancesCommandOutput,
  TerminateInstancesCommandInput,
  TerminateInstancesCommandOutput,
} from '@aws-sdk/client-ec2'

/**
 * The subset of EC2 that studiopool calls (architecture.md conventions `<name>-client.ts`). Each method is one API
 * call: no retries (ec2-errors.ts `withRetries` does that) and no pagination (the provider follows
 * `NextToken`, so it can bound the loop).
 */
export interface Ec2Api {
  /** The region the client talks to: provider settings, else the SDK's chain (AWS_REGION, profile). */
  region(): Promise<string>
  runInstances(input: RunInstancesCommandInput, signal?: AbortSignal): Promise<RunInstancesCommandOutput>
  /** One page. */
  describeInstances(input: DescribeInstancesCommandInput, signal?: AbortSignal): Promise<DescribeInstancesCommandOutput>
  terminateInstances(
    input: TerminateInstancesCommandInput,
    signal?: AbortSignal,
  ): Promise<TerminateInstancesCommandOutput>
  stopInstances(input: StopInstancesCommandInput, signal?: AbortSignal): Promise<StopInstancesCommandOutput>
  startInstances(input: StartInstancesCommandInput, signal?: AbortSignal): Promise<StartInstancesCommandOutput>
  /** Adds or overwrites tags (relabel: the owner on claim). */
  createTags(input: CreateTagsCommandInput, signal?: AbortSignal): Promise<CreateTagsCommandOutput>
  destroy(): void
}

/**
 * Backed by the SDK's `EC2Client`. Region and credentials come from the standard AWS chain
 * (environment, shared profile, SSO, ECS/EC2 instance role); studiopool's config never holds keys.
 * `maxAttempts: 1` turns the SDK's own retries off, so that the only retry policy is ours
 * (bounded, jittered, tested) and attempts do not multiply.
 */
export function createEc2Api(opts: { region?: string } = {}): Ec2Api {
  const client = new EC2Client({ ...(opts.region ? { region: opts.region } : {}), maxAttempts: 1 })
  return {
    async region() {
      return await client.config.region()
    },
    runInstances: (input, signal) => client.send(new RunInstancesCommand(input), { abortSignal: signal }),
    describeInstances: (input, signal) => client.send(new DescribeInstancesCommand(input), { abortSignal: signal }),
    terminateInstances: (input, signal) => client.send(new TerminateInstancesCommand(input), { abortSignal: signal }),
    stopInstances: (input, signal) => client.send(new StopInstancesCommand(input), { abortSignal: signal }),
    startInstances: (input, signal) => client.send(new StartInstancesCommand(input), { abortSignal: signal }),
    createTags: (input, signal) => client.send(new CreateTagsCommand(input), { abortSignal: signal }),
    destroy: () => client.destroy(),
  }
}
