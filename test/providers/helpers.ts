import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'

/** Whether a pid runs (a zombie does not count). */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

/** Non-zombie pids whose process group is `pgid`. */
export function pidsInGroup(pgid: number): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(f[2]) === pgid && f[0] !== 'Z') out.push(Number(name))
    } catch {
      // gone meanwhile
    }
  }
  return out
}

/**
 * Kills pids (and their groups) a test started itself, outside the provider (a stranger standing
 * in for a reused pid); never throws. Sessions the provider started are ended with
 * `endSessionsUnder(dataDir)` (src/providers/local), which also gives back their namespaces.
 */
export function killAll(pids: Iterable<number>): void {
  for (const pid of pids) {
    for (const target of [-pid, pid]) {
      try {
        process.kill(target, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
}

/**
 * What the local provider of one scope left on this host, by name (checked without the
 * provider's code): network namespaces `sp<scope>-<n>`, host-side veths `sp<scope>v<n>`, slot
 * claims of the scope, and its nftables table. Empty once a test cleaned up after itself.
 */
export function localLeftovers(scope: string): string[] {
  const out: string[] = []
  if (existsSync('/run/netns'))
    for (const n of readdirSync('/run/netns')) if (n.startsWith(`sp${scope}-`)) out.push(`netns ${n}`)
  for (const n of readdirSync('/sys/class/net')) if (n.startsWith(`sp${scope}v`)) out.push(`veth ${n}`)
  const slots = '/run/studiopool/slots'
  if (existsSync(slots))
    for (const n of readdirSync(slots)) {
      try {
        const claim = JSON.parse(readFileSync(`${slots}/${n}`, 'utf8')) as { pool?: string; instanceId?: string }
        if (claim.pool === scope) out.push(`slot ${n} claimed by ${claim.instanceId}`)
      } catch {
        // released meanwhile, or being written
      }
    }
  try {
    const tables = execFileSync('nft', ['list', 'tables'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    if (tables.includes(`studiopool_${scope}`)) out.push(`nft table studiopool_${scope}`)
  } catch {
    // no nftables here
  }
  return out
}
