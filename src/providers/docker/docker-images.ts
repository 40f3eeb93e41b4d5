import { ProviderError } from '../../domain/errors.js'
import type { InstanceSpec, OperationOptions } from '../provider.js'
import type { DockerHosts, HostState } from './docker-hosts.js'
import { isUnavailable } from './docker-hosts.js'
import { isRootUser } from './docker-instances.js'
import { PullTracker, type LaunchProgress } from './docker-progress.js'
import type { DockerTemplateSettings } from './docker-provider-config.js'

const NAME = 'docker'
/** Launch progress while pulling: from the pool's 5 % (asked the provider) up to 15 % (pulled). */
const PULL_PROGRESS_FROM = 5
const PULL_PROGRESS_SPAN = 10

/**
 * The template's image is on the host (pulled when the policy says so, with layers done / total
 * reported as launch progress), and does not run as root unless the template says so; otherwise
 * a ProviderError naming the image (kind `missing` when it is absent and may not be pulled: the
 * template's breaker opens, and the user sees the message).
 */
export async function ensureImage(
  hosts: DockerHosts,
  h: HostState,
  spec: InstanceSpec,
  s: DockerTemplateSettings,
  opts: OperationOptions & { progress: LaunchProgress; pullTimeoutMs: number },
): Promise<void> {
  const inspect = () => hosts.onHost(h, (c) => c.imageInspect(s.image, { signal: opts.signal }))
  let image = s.pullPolicy === 'always' ? undefined : await inspect()
  if (!image) {
    if (s.pullPolicy === 'never') {
      throw new ProviderError(
        NAME,
        `template "${spec.template.name}": image "${s.image}" is not on Docker host ${h.host.name}, and its pullPolicy is never`,
        { kind: 'missing' },
      )
    }
    await pull(hosts, h, spec, s, opts)
    image = await inspect()
    if (!image)
      throw new ProviderError(
        NAME,
        `template "${spec.template.name}": image "${s.image}" is still missing on ${h.host.name} after a pull`,
        { kind: 'missing' },
      )
  }
  if (!s.user && isRootUser(image.Config?.User)) {
    // architecture.md: no session code runs as root unless a template says so in words.
    throw new ProviderError(
      NAME,
      `template "${spec.template.name}": image "${s.image}" runs as root; set docker.user (for example "1000:1000"), or user: root to allow it`,
      { kind: 'config' },
    )
  }
}

async function pull(
  hosts: DockerHosts,
  h: HostState,
  spec: InstanceSpec,
  s: DockerTemplateSettings,
  opts: OperationOptions & { progress: LaunchProgress; pullTimeoutMs: number },
): Promise<void> {
  opts.log.info({ image: s.image, host: h.host.name }, 'docker: pulling image')
  const what = `pulling image ${s.image} on ${h.host.name}`
  opts.progress.report(PULL_PROGRESS_FROM, what)
  const layers = new PullTracker()
  try {
    await hosts.onHost(h, (c) =>
      c.imagePull(
        s.image,
        (ev) => {
          if (!layers.add(ev)) return
          const share = layers.total ? layers.done / layers.total : 0
          opts.progress.report(
            PULL_PROGRESS_FROM + Math.round(PULL_PROGRESS_SPAN * share),
            `${what}: ${layers.done}/${layers.total} layers`,
          )
        },
        { signal: opts.signal, timeoutMs: opts.pullTimeoutMs },
      ),
    )
  } catch (err) {
    throw new ProviderError(
      NAME,
      `template "${spec.template.name}": cannot pull image "${s.image}" on ${h.host.name}: ${(err as Error).message}`,
      { cause: err, retryable: isUnavailable(err) },
    )
  }
}
