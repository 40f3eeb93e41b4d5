/**
 * A stand-in server process for the kill -9 tests: creates one instance through the docker
 * provider and waits to be killed. Argument: JSON `{url, poolId, spec}`.
 */
import pino from 'pino'
import { DockerProvider } from '../../src/providers/docker/index.js'
import type { InstanceSpec } from '../../src/providers/provider.js'

const { url, poolId, spec } = JSON.parse(process.argv[2]!) as { url: string; poolId: string; spec: InstanceSpec }
const log = pino({ level: 'silent' })
const provider = new DockerProvider({
  poolId,
  dataDir: '/nonexistent',
  settings: { hosts: [{ name: 'h1', url }] },
  log,
})
await provider.init({ log })
process.stdout.write('init\n')
await provider.create(spec, { log })
process.stdout.write('created\n')
