import { ProviderError } from '../../domain/errors.js'
import { isInstanceId } from '../../domain/ids.js'
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE, type InstanceSpec, type ProviderInstance } from '../provider.js'
import { SLURM_DEFAULTS, type SlurmTemplateSettings } from './slurm-config.js'
import { TERMINAL_STATES, firstLine, parseTimeLeft, type SlurmCli, type SlurmJob } from './slurm-cli.js'

/** The job comment: `studiopool:<base64url JSON labels>`, then ` addr=host:port` once the app listens. */
export const COMMENT_PREFIX = 'studiopool:'
const ADDR_RE = / addr=([A-Za-z0-9.-]{1,253}|\[[0-9a-fA-F:]{2,45}\]):(\d{1,5})$/
const NAME = 'slurm'
const ACCOUNT_RE = /^[a-z_][a-z0-9_.-]{0,31}$/
/** Ends that mean the app did not run (a starting session fails with Slurm's reason instead of being replaced). */
const FAILED_STATES = new Set(['FAILED', 'BOOT_FAIL', 'OUT_OF_MEMORY', 'COMPLETED', 'DEADLINE'])
const HELD_REASONS = new Set(['JobHeldUser', 'JobHeldAdmin'])

/** What squeue says of a job of ours; labels from its comment (for jobs without a record). */
export function jobToInstance(job: SlurmJob, prefix: string, poolId: string): ProviderInstance {
  const labels = labelsOfComment(job.comment)
  const idFromName = job.name.slice(prefix.length)
  const instanceId = labels[LABEL_INSTANCE] ?? (isInstanceId(idFromName) ? idFromName : '')
  const addr = ADDR_RE.exec(job.comment)
  const address = addr ? `http://${addr[1]}:${addr[2]}` : null
  const base = {
    ref: job.id,
    instanceId,
    template: labels[LABEL_TEMPLATE] ?? '',
    labels: { ...labels, [LABEL_POOL]: poolId },
    createdAt: null,
  }
  if (TERMINAL_STATES.has(job.state)) {
    // COMPLETING is on its way to its end; with NonZeroExitCode that end is FAILED.
    if (job.state === 'COMPLETING' && job.reason === 'NonZeroExitCode') job = { ...job, state: 'FAILED' }
    const why = job.reason && job.reason !== 'None' ? ` (${job.reason})` : ''
    const endReason = job.state === 'TIMEOUT' ? 'lifetime' : FAILED_STATES.has(job.state) ? 'failed' : undefined
    return {
      ...base,
      state: 'terminated',
      address: null,
      message: `Slurm job ${job.id} ${job.state}${why}`,
      ...(endReason ? { endReason } : {}),
    }
  }
  if (job.state === 'SUSPENDED') return { ...base, state: 'stopped', address, message: `Slurm job ${job.id} suspended` }
  if (job.state === 'PENDING' || job.state === 'REQUEUED' || job.state === 'CONFIGURING') {
    if (HELD_REASONS.has(job.reason))
      return { ...base, state: 'stopped', address: null, message: `Slurm job ${job.id} held` }
    const start = /^\d{4}-/.test(job.start) ? `; expected start ${job.start}` : ''
    return {
      ...base,
      state: 'pending',
      address: null,
      progress: 10,
      message: `waiting in the Slurm queue: ${job.reason || 'None'}${start}`.slice(0, 200),
    }
  }
  // RUNNING (and the other states of a job that holds its node).
  const left = parseTimeLeft(job.timeLeft)
  const tl =
    left === null
      ? ''
      : left < SLURM_DEFAULTS.walltimeWarningMs
        ? `; only ${job.timeLeft} of walltime left: the session ends at its Slurm time limit`
        : `; ${job.timeLeft} of walltime left`
  return {
    ...base,
    state: 'running',
    address,
    progress: address ? 70 : 40,
    message: address
      ? `Slurm job ${job.id} on ${job.nodes}${tl}`
      : `Slurm job ${job.id} running on ${job.nodes}; waiting for the app to report its port`,
  }
}

export function labelsOfComment(comment: string): Record<string, string> {
  if (!comment.startsWith(COMMENT_PREFIX)) return {}
  const b64 = comment.slice(COMMENT_PREFIX.length).split(' ')[0] ?? ''
  try {
    const v = JSON.parse(Buffer.from(b64, 'base64url').toString('utf8')) as unknown
    if (!v || typeof v !== 'object' || Array.isArray(v)) return {}
    const out: Record<string, string> = {}
    for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x
    return out
  } catch {
    return {}
  }
}

/** The account the job runs as: never root, always a plain account name. */
export function accountOf(spec: InstanceSpec, s: SlurmTemplateSettings): string {
  const pattern = spec.ownerId ? s.user : (s.warmUser ?? s.user)
  const user = pattern === '{{user}}' ? (spec.ownerId ?? '') : pattern
  if (!user)
    throw new ProviderError(NAME, `template "${spec.template.name}": warm instances need slurm.warmUser (no owner yet)`)
  if (!ACCOUNT_RE.test(user))
    throw new ProviderError(NAME, `"${user.slice(0, 40)}" is not an account name the cluster can run a job as`)
  if (user === 'root') throw new ProviderError(NAME, 'sessions never run as root')
  return user
}

/** The account's primary group (cached in `known`); refuses an account with uid or gid 0. */
export async function gidOf(cli: SlurmCli, known: Map<string, string>, user: string): Promise<string> {
  const cached = known.get(user)
  if (cached) return cached
  const [u, g] = [await cli.run('id', ['-u', '--', user]), await cli.run('id', ['-g', '--', user])]
  const [uid, gid] = [u.stdout.trim(), g.stdout.trim()]
  if (u.code !== 0 || g.code !== 0 || !/^\d+$/.test(uid) || !/^\d+$/.test(gid))
    throw new ProviderError(NAME, `no account "${user}" on the submit host: ${firstLine(u.stderr || g.stderr)}`)
  if (uid === '0' || gid === '0')
    throw new ProviderError(NAME, `account "${user}" has uid or gid 0; sessions never run as root`)
  known.set(user, gid)
  return gid
}
