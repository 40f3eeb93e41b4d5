import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Logger } from 'pino'
import type { IsolationReport } from '../provider.js'
import { findExecutable } from './local-proc.js'

const run = promisify(execFile)
const CMD_TIMEOUT_MS = 10_000
/** Where `ip`, `nft`, `unshare` and `setpriv` usually are; searched after PATH. */
const SBIN_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'

/**
 * How sessions of the local provider are kept apart from each other and from the server
 * (DESIGN.md contract 5). Decided once at `init` from what this machine allows:
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

/** What one session slot gets: a uid, a /30, names for its namespace and veth. */
export interface SessionSlot {
  readonly slot: number
  readonly uid: number
  readonly hostIp: string
  readonly sessionIp: string
  readonly netns: string
  readonly veth: string
}

/**
 * The scope of one local provider: its pool id and its data directory. Two servers on one host
 * (even with the same pool id) never share namespace or interface names, slot claims or markers.
 */
export function localScope(poolId: string, dataDir: string): string {
  return createHash('sha256').update(`${poolId}\0${dataDir}`).digest('hex').slice(0, 6)
}

export function slotCount(s: IsolationSettings): number {
  return Math.min(s.uidCount, 2 ** (32 - s.subnet[1]) / 4)
}

export function slotOf(s: IsolationSettings, tag: string, slot: number): SessionSlot {
  const base = s.subnet[0] + slot * 4
  return {
    slot,
    uid: s.uidFirst + slot,
    hostIp: ipv4(base + 1),
    sessionIp: ipv4(base + 2),
    netns: `sp${tag}-${slot}`,
    veth: `sp${tag}v${slot}`, // 'sp' + 6 + 'v' + 5 digits: 14 characters, within IFNAMSIZ (15)
  }
}

function ipv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}

export function parseSubnet(text: string): readonly [number, number] | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text)
  if (!m) return null
  const parts = m.slice(1, 5).map(Number)
  const prefix = Number(m[5])
  if (parts.some((p) => p > 255) || prefix < 8 || prefix > 28) return null
  const n = ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
  return [(n & mask) >>> 0, prefix]
}

function which(program: string): string | null {
  return findExecutable(program, `${process.env.PATH ?? ''}:${SBIN_PATH}`, '/')
}

async function sh(bin: string, args: readonly string[], input?: string): Promise<void> {
  if (input === undefined) {
    await run(bin, args, { timeout: CMD_TIMEOUT_MS })
    return
  }
  await new Promise<void>((resolve, reject) => {
    const child = execFile(bin, args, { timeout: CMD_TIMEOUT_MS }, (err) => (err ? reject(err) : resolve()))
    child.stdin?.end(input)
  })
}

function errLine(err: unknown): string {
  const e = err as { stderr?: string; message?: string }
  return (e.stderr || e.message || String(err)).trim().split('\n')[0]!.slice(0, 200)
}

/** The nftables table of one pool: sessions may answer the gateway, never open a connection or forward a packet. */
function nftRules(tag: string): string {
  const ifs = `sp${tag}v*`
  return [
    `table inet studiopool_${tag} {`,
    `  chain input {`,
    `    type filter hook input priority -10; policy accept;`,
    `    iifname "${ifs}" ct state established,related accept`,
    `    iifname "${ifs}" drop`,
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority -10; policy accept;`,
    `    iifname "${ifs}" drop`,
    `    oifname "${ifs}" drop`,
    `  }`,
    `}`,
    '',
  ].join('\n')
}

/**
 * Decides the isolation of this server's sessions and prepares the host (the nftables table).
 * Throws when `mode: required` and full isolation (`netns` with its firewall) cannot be had.
 */
export async function planIsolation(s: IsolationSettings, tag: string, log: Logger): Promise<IsolationPlan> {
  const shBin = which('sh') ?? '/bin/sh'
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  const cidr = `${ipv4(s.subnet[0])}/${s.subnet[1]}`
  const notes: string[] = []
  const none = (why: string): IsolationPlan => ({
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
  })
  if (!isRoot) return required(s, none('the server is not root, so it cannot switch accounts'))
  const setpriv = which('setpriv')
  if (!setpriv) return required(s, none('`setpriv` (util-linux) is not installed'))
  const unshare = which('unshare')
  let pidns = false
  if (unshare) {
    try {
      await sh(unshare, ['--pid', '--fork', '--kill-child', '--mount-proc', '/bin/true'])
      pidns = true
    } catch (err) {
      notes.push(`no PID namespace per session (${errLine(err)}): sessions can see, but not signal, other processes`)
    }
  } else
    notes.push('no PID namespace per session (`unshare` not found): sessions can see, but not signal, other processes')
  const ip = which('ip')
  let netnsWhy = ''
  if (ip) {
    const probe = `sp${tag}-probe`
    try {
      await sh(ip, ['netns', 'add', probe])
      await sh(ip, ['netns', 'delete', probe])
    } catch (err) {
      netnsWhy = `network namespaces do not work here (${errLine(err)})`
      await sh(ip, ['netns', 'delete', probe]).catch(() => {})
    }
  } else netnsWhy = '`ip` (iproute2) is not installed'
  const bin = { ip: ip ?? '', nft: null as string | null, unshare: pidns ? unshare : null, setpriv, sh: shBin }
  if (netnsWhy) {
    const plan: IsolationPlan = {
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
    return required(s, plan)
  }
  // The session subnet never leaves this host: without this route a session's address, once its
  // veth is gone, would be sent to the default gateway (and whatever answers there).
  try {
    await sh(ip!, ['route', 'replace', 'unreachable', cidr])
  } catch (err) {
    notes.push(`cannot add the unreachable route for ${cidr} (${errLine(err)})`)
  }
  const nft = which('nft')
  let firewall = false
  if (nft) {
    try {
      // `add` then `flush` then the rules: idempotent across restarts, one atomic transaction.
      await sh(
        nft,
        ['-f', '-'],
        `add table inet studiopool_${tag}\nflush table inet studiopool_${tag}\n${nftRules(tag)}`,
      )
      firewall = true
    } catch (err) {
      notes.push(
        `nftables rules could not be loaded (${errLine(err)}): sessions can connect to services listening on all of this host's addresses`,
      )
    }
  } else
    notes.push(
      "nftables (`nft`) is not installed: sessions can connect to services listening on all of this host's addresses (install nftables)",
    )
  bin.nft = firewall ? nft : null
  const plan: IsolationPlan = {
    kind: 'netns',
    firewall,
    pidns,
    bin,
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
  return required(s, plan)
  function required(set: IsolationSettings, plan: IsolationPlan): IsolationPlan {
    if (set.mode === 'required' && !plan.report.isolated) {
      throw new Error(`providers.local.isolation is "required" but ${plan.report.notes.join('; ')}`)
    }
    if (!plan.report.isolated) for (const n of plan.report.notes) log.warn(`local provider: ${n}`)
    else log.info(`local provider: ${plan.report.notes[0]}`)
    return plan
  }
}

/** Creates the slot's network namespace and veth pair (removing leftovers of a crashed run first). */
export async function setupSessionNetwork(plan: IsolationPlan, slot: SessionSlot): Promise<void> {
  if (existsSync(`/run/netns/${slot.netns}`)) await teardownSessionNetwork(plan, slot)
  // Two `ip -batch` runs (host side, then inside the namespace) rather than seven processes.
  const host = [
    `netns add ${slot.netns}`,
    `link add ${slot.veth} type veth peer name eth0 netns ${slot.netns}`,
    `addr add ${slot.hostIp}/30 dev ${slot.veth}`,
    `link set ${slot.veth} up`,
  ]
  const inside = [`addr add ${slot.sessionIp}/30 dev eth0`, 'link set eth0 up', 'link set lo up']
  try {
    await sh(plan.bin.ip, ['-batch', '-'], host.join('\n') + '\n')
    await sh(plan.bin.ip, ['-n', slot.netns, '-batch', '-'], inside.join('\n') + '\n')
  } catch (err) {
    await teardownSessionNetwork(plan, slot)
    throw new Error(`ip: ${errLine(err)}`, { cause: err })
  }
}

/** Idempotent: removes the namespace (its end of the veth goes with it) and the host end. */
export async function teardownSessionNetwork(plan: IsolationPlan, slot: SessionSlot): Promise<void> {
  if (plan.kind !== 'netns') return
  await sh(plan.bin.ip, ['link', 'delete', slot.veth]).catch(() => {})
  if (existsSync(`/run/netns/${slot.netns}`)) await sh(plan.bin.ip, ['netns', 'delete', slot.netns]).catch(() => {})
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

/**
 * Where slot claims live: host-wide (uids and subnets are the host's, whatever pool or data
 * directory a server uses), on /run, which is cleared at boot together with every namespace.
 */
export const SLOTS_DIR = '/run/studiopool/slots'

interface SlotClaim {
  readonly pool: string
  readonly instanceId: string
  readonly netns: string
  readonly at: number
}

/** A claim of another pool is given up only when its namespace is gone and the claim is old enough not to be a create under way. */
const FOREIGN_CLAIM_GRACE_MS = 5 * 60_000
/**
 * A released slot rests this long before it is handed out again, while unused slots remain: a
 * new session at a just-released address could otherwise be reached over a keep-alive connection
 * the gateway still holds to the old one (undici keeps idle sockets for 30 s; a dead peer behind a
 * deleted veth never answers them).
 */
const SLOT_COOLDOWN_MS = 2 * 60_000

/**
 * Claims a slot: `<SLOTS_DIR>/<n>` created exclusively, so that two creates (in this or another
 * server process, of this or another pool) never share a uid or a subnet. Never-used slots first,
 * then slots released longer than the cool-down ago, then stale claims and resting slots.
 * `isStale(instanceId)` says whether a claim of this pool is over (its instance is gone).
 */
export function claimSlot(
  slotsDir: string,
  count: number,
  claim: { readonly pool: string; readonly instanceId: string; readonly netnsOf: (slot: number) => string },
  isStale: (holder: string) => boolean,
): number {
  const present = new Set<number>()
  try {
    for (const n of readdirSync(slotsDir)) if (/^\d+$/.test(n)) present.add(Number(n))
  } catch {
    // no slots yet
  }
  const take = (n: number, replace: boolean): boolean => {
    const file = join(slotsDir, String(n))
    if (replace) rmSync(file, { force: true })
    try {
      const fd = openSync(file, 'wx', 0o600)
      writeSync(
        fd,
        JSON.stringify({
          pool: claim.pool,
          instanceId: claim.instanceId,
          netns: claim.netnsOf(n),
          at: Date.now(),
        } satisfies SlotClaim),
      )
      closeSync(fd)
      return true
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      return false
    }
  }
  for (let n = 0; n < count; n++) if (!present.has(n) && take(n, false)) return n
  const now = Date.now()
  const later: number[] = []
  for (const n of present) {
    if (n >= count) continue
    const file = join(slotsDir, String(n))
    const c = readSlotFile(file)
    if (c === 'writing') continue
    if (c !== null && 'releasedAt' in c) {
      if (now - c.releasedAt > SLOT_COOLDOWN_MS) {
        if (take(n, true)) return n
      } else later.push(n)
      continue
    }
    if (c !== null && c.pool === claim.pool && c.instanceId === claim.instanceId) return n
    const stale =
      c === null ||
      (c.pool === claim.pool
        ? isStale(c.instanceId)
        : !existsSync(`/run/netns/${c.netns}`) && now - c.at > FOREIGN_CLAIM_GRACE_MS)
    if (stale) later.unshift(n)
  }
  for (const n of later) if (take(n, true)) return n
  throw new Error(`all ${count} session slots (uids and subnets) are in use`)
}

type SlotFile = SlotClaim | { readonly releasedAt: number }

/** A claim, a release mark, null (garbage), or 'writing' (a claim of the last two seconds not written out yet). */
function readSlotFile(file: string): SlotFile | null | 'writing' {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return null
  }
  try {
    const c = JSON.parse(text) as Partial<SlotClaim> & { releasedAt?: number }
    if (typeof c.releasedAt === 'number') return { releasedAt: c.releasedAt }
    if (
      typeof c.pool === 'string' &&
      typeof c.instanceId === 'string' &&
      typeof c.netns === 'string' &&
      typeof c.at === 'number'
    )
      return c as SlotClaim
  } catch {
    // fall through
  }
  return fileAgeMs(file) < 2000 ? 'writing' : null
}

function fileAgeMs(file: string): number {
  try {
    return Date.now() - statSync(file).mtimeMs
  } catch {
    return Infinity
  }
}

/** Slots whose namespace of this pool exists on the host (`sp<tag>-<n>` under /run/netns). */
export function namespacesOf(tag: string): number[] {
  const prefix = `sp${tag}-`
  try {
    return readdirSync('/run/netns')
      .filter((n) => n.startsWith(prefix) && /^\d+$/.test(n.slice(prefix.length)))
      .map((n) => Number(n.slice(prefix.length)))
  } catch {
    return []
  }
}

/** The instance of this pool holding a slot, if any. */
export function slotHolder(slotsDir: string, slot: number, pool: string): string | null {
  const c = readClaim(join(slotsDir, String(slot)))
  return c && c.pool === pool ? c.instanceId : null
}

function readClaim(file: string): SlotClaim | null {
  const c = readSlotFile(file)
  return c !== null && c !== 'writing' && !('releasedAt' in c) ? c : null
}

/** Gives the slot back (a release mark, so that it rests before reuse), if the claim is still this instance's. */
export function releaseSlot(slotsDir: string, slot: number, pool: string, instanceId: string): void {
  const file = join(slotsDir, String(slot))
  const c = readClaim(file)
  if (!c || c.pool !== pool || c.instanceId !== instanceId) return
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, JSON.stringify({ releasedAt: Date.now() }), { mode: 0o600 })
  renameSync(tmp, file)
}
