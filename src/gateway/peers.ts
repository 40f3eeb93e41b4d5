import { BlockList, isIP } from 'node:net'

/**
 * The one grammar for trusted peers (issue 8): `server.trustProxy` (X-Forwarded-* for the gateway
 * and the API) and `dashboard.header.trustedProxies` (the trusted-header login) both list
 * - single addresses: `10.0.0.5`, `fd00::5`;
 * - CIDR ranges: `10.0.0.0/8`, `fd00::/8`;
 * - the word `loopback` (alias `localhost`): 127.0.0.0/8 and ::1 (and their IPv4-mapped forms).
 * Anything else is a configuration error (`peerProblems`), never silently skipped.
 */

/** One parsed entry: an IP range (a single address is a /32 or /128). */
export interface PeerRange {
  readonly entry: string
  readonly address: string
  readonly bits: number
  readonly family: 4 | 6
}

export interface PeerSet {
  readonly ranges: readonly PeerRange[]
  /** `loopback` was listed. */
  readonly loopback: boolean
  /** Whether a socket peer address is in the set. */
  match(addr: string): boolean
}

const LOOPBACK_WORDS = new Set(['loopback', 'localhost'])

function parseEntry(raw: string): PeerRange | 'loopback' | string {
  const entry = raw.trim()
  if (LOOPBACK_WORDS.has(entry)) return 'loopback'
  const slash = entry.indexOf('/')
  const ip = slash < 0 ? entry : entry.slice(0, slash)
  const family = isIP(ip)
  if (!family) return `"${raw}" is not an address, a CIDR range or the word loopback`
  const max = family === 4 ? 32 : 128
  let bits = max
  if (slash >= 0) {
    const b = entry.slice(slash + 1)
    if (!/^\d{1,3}$/.test(b) || Number(b) > max) return `"${raw}": the prefix length must be 0–${max}`
    bits = Number(b)
  }
  return { entry, address: ip, bits, family: family as 4 | 6 }
}

/** Problems with a list, one message per bad entry (empty when fine). */
export function peerProblems(list: readonly string[]): string[] {
  return list.map(parseEntry).filter((r): r is string => typeof r === 'string' && r !== 'loopback')
}

/** The set of a list; bad entries (which the config loader refuses) match nothing. */
export function peerSet(list: readonly string[]): PeerSet {
  const bl = new BlockList()
  const ranges: PeerRange[] = []
  let loopback = false
  for (const raw of list) {
    const r = parseEntry(raw)
    if (r === 'loopback') loopback = true
    else if (typeof r !== 'string') {
      ranges.push(r)
      bl.addSubnet(r.address, r.bits, r.family === 4 ? 'ipv4' : 'ipv6')
    }
  }
  return {
    ranges,
    loopback,
    match(addr: string): boolean {
      if (!addr) return false
      const a = unmapped(addr)
      if (loopback && isLoopback(a)) return true
      const family = isIP(a)
      return family !== 0 && bl.check(a, family === 4 ? 'ipv4' : 'ipv6')
    },
  }
}

/** `::ffff:10.0.0.5` → `10.0.0.5`; other addresses as they are. */
export function unmapped(addr: string): string {
  return addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr
}

export function isLoopback(addr: string): boolean {
  const a = unmapped(addr)
  return a === '::1' || /^127\.\d+\.\d+\.\d+$/.test(a)
}

/** Whether the set can match a loopback peer (the word, or a range that holds a loopback address). */
export function coversLoopback(set: PeerSet): boolean {
  return (
    set.loopback ||
    set.ranges.some(
      (r) =>
        overlaps(r, { entry: '127.0.0.0/8', address: '127.0.0.0', bits: 8, family: 4 }) ||
        overlaps(r, { entry: '::1', address: '::1', bits: 128, family: 6 }),
    )
  )
}

/** Entries of the set that overlap a CIDR (a provider's session network). */
export function overlapping(set: PeerSet, cidr: string): string[] {
  const other = parseEntry(cidr)
  if (other === 'loopback')
    return coversLoopback(set)
      ? [...(set.loopback ? ['loopback'] : []), ...set.ranges.filter((r) => isLoopback(r.address)).map((r) => r.entry)]
      : []
  if (typeof other === 'string') return []
  return set.ranges.filter((r) => overlaps(r, other)).map((r) => r.entry)
}

function contains(range: PeerRange, address: string, family: 4 | 6): boolean {
  if (range.family !== family) return false
  const bl = new BlockList()
  bl.addSubnet(range.address, range.bits, family === 4 ? 'ipv4' : 'ipv6')
  return bl.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

/** Two ranges overlap exactly when one holds the other's first address. */
function overlaps(a: PeerRange, b: PeerRange): boolean {
  if (a.family !== b.family) return false
  return contains(a, b.address, b.family) || contains(b, a.address, a.family)
}
