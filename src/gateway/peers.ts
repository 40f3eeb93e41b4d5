import { BlockList, isIP } from 'node:net'

/**
 * The one grammar for trusted peers (issues 8 and 10), and the one matcher. It reads
 * `server.trustProxy` (X-Forwarded-* for the gateway and the API: gateway/access.ts and
 * api/server.ts), `dashboard.header.trustedProxies` (the trusted-header login: web/dashboard.ts),
 * a provider's session networks and the public URL's host (the login rules: web/login-policy.ts),
 * and the config loader checks every list with it (`peerProblems`). An entry is
 * - a single address: `10.0.0.5`, `fd00::5`, `::ffff:10.0.0.5` (IPv4-mapped: the IPv4 address);
 * - a CIDR range: `10.0.0.0/8`, `fd00::/8`;
 * - the word `loopback` (alias `localhost`): 127.0.0.0/8 and ::1 (and their IPv4-mapped forms).
 * Anything else is a configuration error, never silently skipped. A peer address is matched after
 * unwrapping its IPv4-mapped form, whichever list it is matched against.
 */

/** One parsed entry: an IP range (a single address is a /32 or /128). */
export interface PeerRange {
  readonly entry: string
  readonly address: string
  readonly bits: number
  readonly family: 4 | 6
}

const LOOPBACK_WORDS = new Set(['loopback', 'localhost'])
const LOOPBACK_V4: PeerRange = { entry: '127.0.0.0/8', address: '127.0.0.0', bits: 8, family: 4 }
const LOOPBACK_V6: PeerRange = { entry: '::1', address: '::1', bits: 128, family: 6 }

/** One entry of the grammar: a range, the loopback word, or what is wrong with it. */
export type PeerEntry = PeerRange | 'loopback' | { readonly problem: string }

export function parsePeer(raw: string): PeerEntry {
  const entry = raw.trim()
  if (LOOPBACK_WORDS.has(entry.toLowerCase())) return 'loopback'
  const slash = entry.indexOf('/')
  const ip = unmapped(slash < 0 ? entry : entry.slice(0, slash))
  const family = isIP(ip)
  if (!family) return { problem: `"${raw}" is not an address, a CIDR range or the word loopback` }
  const max = family === 4 ? 32 : 128
  let bits = max
  if (slash >= 0) {
    const b = entry.slice(slash + 1)
    if (!/^\d{1,3}$/.test(b) || Number(b) > max) return { problem: `"${raw}": the prefix length must be 0–${max}` }
    bits = Number(b)
  }
  return { entry, address: ip, bits, family: family as 4 | 6 }
}

/** Problems with a list, one message per bad entry (empty when fine). */
export function peerProblems(list: readonly string[]): string[] {
  const out: string[] = []
  for (const raw of list) {
    const r = parsePeer(raw)
    if (typeof r === 'object' && 'problem' in r) out.push(r.problem)
  }
  return out
}

/** A parsed list and its matcher. Bad entries (which the config loader refuses) match nothing. */
export class PeerSet {
  readonly ranges: readonly PeerRange[]
  /** `loopback` was listed. */
  readonly loopback: boolean
  readonly #list = new BlockList()

  constructor(list: readonly string[]) {
    const ranges: PeerRange[] = []
    let loopback = false
    for (const raw of list) {
      const r = parsePeer(raw)
      if (r === 'loopback') loopback = true
      else if (!('problem' in r)) {
        ranges.push(r)
        this.#list.addSubnet(r.address, r.bits, r.family === 4 ? 'ipv4' : 'ipv6')
      }
    }
    this.ranges = ranges
    this.loopback = loopback
  }

  /** Nothing is trusted. */
  get empty(): boolean {
    return !this.loopback && this.ranges.length === 0
  }

  /** Whether a socket peer address is in the set. */
  match(addr: string): boolean {
    if (!addr) return false
    const a = unmapped(addr)
    if (this.loopback && isLoopback(a)) return true
    const family = isIP(a)
    return family !== 0 && this.#list.check(a, family === 4 ? 'ipv4' : 'ipv6')
  }

  /** Whether the set can match a loopback peer (the word, or a range that holds a loopback address). */
  coversLoopback(): boolean {
    return this.loopback || this.ranges.some((r) => overlaps(r, LOOPBACK_V4) || overlaps(r, LOOPBACK_V6))
  }

  /** Entries of the set that overlap another entry of the grammar (a provider's session network). */
  overlapping(cidr: string): string[] {
    const other = parsePeer(cidr)
    if (other === 'loopback')
      return this.coversLoopback()
        ? [
            ...(this.loopback ? ['loopback'] : []),
            ...this.ranges.filter((r) => overlaps(r, LOOPBACK_V4) || overlaps(r, LOOPBACK_V6)).map((r) => r.entry),
          ]
        : []
    if ('problem' in other) return []
    return this.ranges.filter((r) => overlaps(r, other)).map((r) => r.entry)
  }
}

export function peerSet(list: readonly string[]): PeerSet {
  return new PeerSet(list)
}

/** `::ffff:10.0.0.5` → `10.0.0.5`; other addresses as they are. */
export function unmapped(addr: string): string {
  return addr.length > 7 && addr.toLowerCase().startsWith('::ffff:') && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr
}

/** A peer address in 127.0.0.0/8 or ::1 (IPv4-mapped forms too). */
export function isLoopback(addr: string): boolean {
  const a = unmapped(addr)
  return a === '::1' || (isIP(a) === 4 && a.startsWith('127.'))
}

/**
 * A URL's host that names this machine in the grammar's terms: the word `localhost` or a loopback
 * address (brackets of an IPv6 host allowed), e.g. for the public URL of the dev login.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '')
  const e = parsePeer(h)
  return e === 'loopback' || (!('problem' in e) && e.bits === (e.family === 4 ? 32 : 128) && isLoopback(e.address))
}

/** Whether the set can match a loopback peer. */
export function coversLoopback(set: PeerSet): boolean {
  return set.coversLoopback()
}

/** Entries of the set that overlap a CIDR (a provider's session network). */
export function overlapping(set: PeerSet, cidr: string): string[] {
  return set.overlapping(cidr)
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
