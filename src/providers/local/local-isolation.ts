import { createHash } from 'node:crypto'
import type { Logger } from 'pino'
import type { IsolationReport } from '../provider.js'
import { loadFirewall } from './local-firewall.js'
import { errLine, sh, which } from './local-host.js'
import { probeNetns, routeSubnetNowhere, slotCount, subnetCidr, type SessionSlot } from './local-network.js'

/**
 * How sessions of the local provider are kept apart from each other and from the server
 * (architecture.md contract 5). Decided once at `init` from what this machine allows:
 *
 * - `netns` (the server is root, iproute2 works): each session runs under its own unprivileged
 *   uid (from `uids`, no supplementary groups, no new privileges, an empty capability bounding
 *   set, umask 077), in its own PID namespace (it sees only its own processes; when its first
 *   process dies the kernel kills the rest) and in its own network namespace joined to the host by
 *   one veth pair (a /30 out of `subnet`). The app listens on the namespace side; the gateway
 *   connects to it from the host side. A session has its own loopback, so nothing on the host's
 *   loopback (the server, Postgres, other sessions' ports) is reachable from it, and with
 *   nftables a rule drops every connection a session opens towards the host (only replies to the
 *   gateway's connections pass) and every packet it would have forwarded (no route to other
 *   sessions or elsewhere).
 *   Why namespaces rather than owner matching on one loopback (`meta skuid`): an app's own
 *   processes talk to each other over loopback too (Jupyter's kernels over ZeroMQ on random
 *   ports), and no firewall rule can say "only to ports of the same uid".
 * - `uid` (root, but network namespaces do not work here): own uid and PID namespace as above
 *   (or without the PID namespace when `unshare` fails), sessions on the host's loopback: they can
 *   connect to each other's ports and to the server's; said loudly.
 * - `none` (the server is not root): sessions run as the server's own account; said loudly.
 */
export type IsolationKind = 'netns' | 'uid' | 'none'

export interface IsolationPlan {
  readonly kind: IsolationKind
  /** nftables rules are in place (netns only). */
  readonly firewall: boolean
  /** PID namespace per session. */
  readonly pidns: boolean
  readonly report: IsolationReport
  /** Absolute paths of the helpers, when used. */
  readonly bin: {
    readonly ip: string
    readonly nft: string | null
    readonly unshare: string | null
    readonly setpriv: string | null
    readonly sh: string
  }
}

export interface IsolationSettings {
  readonly mode: 'auto' | 'required'
  readonly uidFirst: number
  readonly uidCount: number
  /** `10.213.0.0/16` as [network as a 32-bit number, prefix length]. */
  readonly subnet: readonly [number, number]
}

/**
 * The scope of one local provider: its pool id and its data directory. Two servers on one host
 * (even with the same pool id) never share namespace or interface names, slot claims or markers.
 */
export function localScope(poolId: string, dataDir: string): string {
  return createHash('sha256').update(`${poolId}\0${dataDir}`).digest('hex').slice(0, 6)
}

type Bin = IsolationPlan['bin']

/** Sessions as the server's own account: the plan when the server is not root or lacks `setpriv`. */
function unisolated(why: string, shBin: string): IsolationPlan {
  return {
    kind: 'none',
    firewall: false,
    pidns: false,
    bin: { ip: '', nft: null, unshare: null, setpriv: null, sh: shBin },
    report: {
      isolated: false,
      sessionsReachLoopback: true,
      sessionNetworks: [],
      notes: [
        `sessions are NOT isolated: ${why}; they run as the server's own account on 127.0.0.1 and can read its data directory, signal its processes and connect to every other session (acceptable for one person on a laptop; run the server as root for isolation)`,
      ],
    },
  }
}

/** Whether `unshare` can give each session its own PID namespace; a note when it cannot. */
async function probePidns(unshare: string | null): Promise<{ pidns: boolean; note?: string }> {
  if (!unshare)
    return {
      pidns: false,
      note: 'no PID namespace per session (`unshare` not found): sessions can see, but not signal, other processes',
    }
  try {
    await sh(unshare, ['--pid', '--fork', '--kill-child', '--mount-proc', '/bin/true'])
    return { pidns: true }
  } catch (err) {
    return {
      pidns: false,
      note: `no PID namespace per session (${errLine(err)}): sessions can see, but not signal, other processes`,
    }
  }
}

/** Own accounts (and PID namespaces) on the host's loopback: network namespaces do not work here. */
function uidOnly(pidns: boolean, bin: Bin, netnsWhy: string, notes: readonly string[]): IsolationPlan {
  return {
    kind: 'uid',
    firewall: false,
    pidns,
    bin,
    report: {
      isolated: false,
      sessionsReachLoopback: true,
      sessionNetworks: [],
      notes: [
        `sessions run under their own unprivileged accounts, but share the host's loopback: ${netnsWhy}; a session can connect to other sessions' ports and to the server's listeners`,
        ...notes,
      ],
    },
  }
}

/** Full isolation: prepares the host (the unreachable route, the nftables table) and says what it got. */
async function withNamespaces(
  s: IsolationSettings,
  tag: string,
  pidns: boolean,
  bin: Bin,
  notes: string[],
): Promise<IsolationPlan> {
  const cidr = subnetCidr(s)
  const route = await routeSubnetNowhere(bin.ip, cidr)
  if (route) notes.push(route)
  const nft = which('nft')
  let firewall = false
  if (nft) {
    const why = await loadFirewall(nft, tag)
    firewall = why === null
    if (why !== null)
      notes.push(
        `nftables rules could not be loaded (${why}): sessions can connect to services listening on all of this host's addresses`,
      )
  } else
    notes.push(
      "nftables (`nft`) is not installed: sessions can connect to services listening on all of this host's addresses (install nftables)",
    )
  return {
    kind: 'netns',
    firewall,
    pidns,
    bin: { ...bin, nft: firewall ? nft : null },
    report: {
      isolated: firewall && pidns,
      sessionsReachLoopback: false,
      sessionNetworks: [cidr],
      notes: [
        `sessions run under their own unprivileged accounts (uids ${s.uidFirst}–${s.uidFirst + slotCount(s) - 1}), each in its own network namespace (${cidr})${pidns ? ' and PID namespace' : ''}${firewall ? '; nftables drops every connection a session opens to the host' : ''}`,
        ...notes,
      ],
    },
  }
}

/**
 * Decides the isolation of this server's sessions and prepares the host (the nftables table).
 * Throws when `mode: required` and full isolation (`netns` with its firewall) cannot be had.
 */
export async function planIsolation(s: IsolationSettings, tag: string, log: Logger): Promise<IsolationPlan> {
  const plan = await decide(s, tag)
  if (s.mode === 'required' && !plan.report.isolated) {
    throw new Error(`providers.local.isolation is "required" but ${plan.report.notes.join('; ')}`)
  }
  if (!plan.report.isolated) for (const n of plan.report.notes) log.warn(`local provider: ${n}`)
  else log.info(`local provider: ${plan.report.notes[0]}`)
  return plan
}

async function decide(s: IsolationSettings, tag: string): Promise<IsolationPlan> {
  const shBin = which('sh') ?? '/bin/sh'
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  if (!isRoot) return unisolated('the server is not root, so it cannot switch accounts', shBin)
  const setpriv = which('setpriv')
  if (!setpriv) return unisolated('`setpriv` (util-linux) is not installed', shBin)
  const unshare = which('unshare')
  const { pidns, note } = await probePidns(unshare)
  const notes = note ? [note] : []
  const ip = which('ip')
  const netnsWhy = await probeNetns(ip, tag)
  const bin: Bin = { ip: ip ?? '', nft: null, unshare: pidns ? unshare : null, setpriv, sh: shBin }
  if (netnsWhy) return uidOnly(pidns, bin, netnsWhy, notes)
  return withNamespaces(s, tag, pidns, bin, notes)
}

/**
 * argv that runs `program args` as the slot's account inside its namespaces, umask 077:
 * `ip netns exec NS unshare --pid --fork --kill-child --mount-proc setpriv … sh -c 'umask 077; exec "$0" "$@"' program args`.
 * Every step execs the next, except unshare, which stays as the parent of the namespace's first
 * process (and kills it if it dies itself): the spawned pid is the group and the record's pid.
 */
export function wrapCommand(
  plan: IsolationPlan,
  slot: SessionSlot | null,
  program: string,
  args: readonly string[],
): [string, string[]] {
  if (plan.kind === 'none' || !slot) return [program, [...args]]
  const inner = [
    plan.bin.setpriv!,
    `--reuid=${slot.uid}`,
    `--regid=${slot.uid}`,
    '--clear-groups',
    '--no-new-privs',
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--',
    plan.bin.sh,
    '-c',
    'umask 077; exec "$0" "$@"',
    program,
    ...args,
  ]
  const withPid =
    plan.pidns && plan.bin.unshare
      ? [plan.bin.unshare, '--pid', '--fork', '--kill-child', '--mount-proc', ...inner]
      : inner
  const full = plan.kind === 'netns' ? [plan.bin.ip, 'netns', 'exec', slot.netns, ...withPid] : withPid
  return [full[0]!, full.slice(1)]
}
