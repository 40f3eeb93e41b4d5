import { existsSync, readdirSync } from 'node:fs'
import type { IsolationPlan, IsolationSettings } from './local-isolation.js'
import { errLine, sh } from './local-host.js'

/**
 * The network side of a session slot: its /30 out of the pool's subnet, its namespace `sp<tag>-<n>`
 * and the host end of its veth `sp<tag>v<n>`.
 */

/** What one session slot gets: a uid, a /30, names for its namespace and veth. */
export interface SessionSlot {
  readonly slot: number
  readonly uid: number
  readonly hostIp: string
  readonly sessionIp: string
  readonly netns: string
  readonly veth: string
}

export function slotCount(s: IsolationSettings): number {
  return Math.min(s.uidCount, 2 ** (32 - s.subnet[1]) / 4)
}

/** The namespace and host-side interface names of a slot of the pool whose scope is `tag`. */
export function slotNames(tag: string, slot: number): { readonly netns: string; readonly veth: string } {
  return {
    netns: `sp${tag}-${slot}`,
    veth: `sp${tag}v${slot}`, // 'sp' + 6 + 'v' + 5 digits: 14 characters, within IFNAMSIZ (15)
  }
}

export function slotOf(s: IsolationSettings, tag: string, slot: number): SessionSlot {
  const base = s.subnet[0] + slot * 4
  return {
    slot,
    uid: s.uidFirst + slot,
    hostIp: ipv4(base + 1),
    sessionIp: ipv4(base + 2),
    ...slotNames(tag, slot),
  }
}

function ipv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}

export function subnetCidr(s: IsolationSettings): string {
  return `${ipv4(s.subnet[0])}/${s.subnet[1]}`
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

/** '' when a network namespace can be created and deleted here, else why not. */
export async function probeNetns(ip: string | null, tag: string): Promise<string> {
  if (!ip) return '`ip` (iproute2) is not installed'
  const probe = `sp${tag}-probe`
  try {
    await sh(ip, ['netns', 'add', probe])
    await sh(ip, ['netns', 'delete', probe])
    return ''
  } catch (err) {
    await sh(ip, ['netns', 'delete', probe]).catch(() => {})
    return `network namespaces do not work here (${errLine(err)})`
  }
}

/**
 * The session subnet never leaves this host: without this route a session's address, once its
 * veth is gone, would be sent to the default gateway (and whatever answers there). null when in
 * place, else why not.
 */
export async function routeSubnetNowhere(ip: string, cidr: string): Promise<string | null> {
  try {
    await sh(ip, ['route', 'replace', 'unreachable', cidr])
    return null
  } catch (err) {
    return `cannot add the unreachable route for ${cidr} (${errLine(err)})`
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
export async function teardownSessionNetwork(
  plan: IsolationPlan,
  slot: Pick<SessionSlot, 'netns' | 'veth'>,
): Promise<void> {
  if (plan.kind !== 'netns') return
  await sh(plan.bin.ip, ['link', 'delete', slot.veth]).catch(() => {})
  if (existsSync(`/run/netns/${slot.netns}`)) await sh(plan.bin.ip, ['netns', 'delete', slot.netns]).catch(() => {})
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
