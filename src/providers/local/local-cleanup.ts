import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { isInstanceId } from '../../domain/ids.js'
import { LABEL_POOL } from '../provider.js'
import { firewallTable } from './local-firewall.js'
import { which } from './local-host.js'
import { localScope } from './local-isolation.js'
import { namespacesOf, slotNames } from './local-network.js'
import { HAS_PROC, killGroup, readProcStat } from './local-proc.js'
import { RecordFiles } from './local-record.js'
import { releaseSlot, slotClaim, SLOTS_DIR } from './local-slots.js'

/**
 * Taking a data directory out of service: ends every session a local provider started under it
 * and gives back what they held on the host, whether or not a server still runs and whether or
 * not the sessions' processes were already killed behind the provider's back. What a test's
 * cleanup calls (so that a test run leaves no process, namespace, veth, slot claim or nftables
 * table behind), and what an operator's script may call once the server is stopped.
 */
export interface EndSessionsOptions {
  /** Pool ids the data directory served, besides those its records name (a pool with no record left). */
  readonly pools?: readonly string[]
  /** Also delete the pools' nftables tables (only once no server of these pools runs on the directory). */
  readonly dropFirewall?: boolean
}

/**
 * Synchronous and idempotent; never throws. Only processes that are this directory's sessions
 * are signalled: a record's group while its leader is still the recorded process (or gone, the
 * group orphaned), and any process carrying the marker of one of the directory's scopes or
 * instances.
 */
export function endSessionsUnder(dataDir: string, opts: EndSessionsOptions = {}): void {
  const data = resolve(dataDir)
  const records = new RecordFiles(join(data, 'instances'))
  const ids = new Set(instanceDirs(records.root))
  const scopes = new Set((opts.pools ?? []).map((p) => localScope(p, data)))
  for (const id of ids) {
    const rec = records.read(id)
    if (!rec) continue
    const pool = rec.labels[LABEL_POOL]
    if (pool) scopes.add(localScope(pool, data))
    const leader = readProcStat(rec.pid)
    // A live leader with another start time: the pid was reused (our group is gone); not ours to signal.
    if (leader && HAS_PROC && leader.startTime !== rec.startTime) continue
    bestEffort(() => killGroup(rec.pgid, 'SIGKILL'))
  }
  for (const pid of markedProcesses(scopes, ids)) {
    bestEffort(() => process.kill(pid, 'SIGKILL'))
    if (readProcStat(pid)?.pgid === pid) bestEffort(() => killGroup(pid, 'SIGKILL'))
  }
  releaseNetworks(scopes, ids, opts.dropFirewall === true)
}

function instanceDirs(root: string): string[] {
  try {
    return readdirSync(root).filter((n) => isInstanceId(n))
  } catch {
    return []
  }
}

/** Processes whose environment carries the marker of one of `scopes` or `ids`. */
function markedProcesses(scopes: ReadonlySet<string>, ids: ReadonlySet<string>): number[] {
  if (!HAS_PROC || (scopes.size === 0 && ids.size === 0)) return []
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue
    let env: string[]
    try {
      env = readFileSync(`/proc/${name}/environ`, 'latin1').split('\0')
    } catch {
      continue
    }
    const value = (k: string) => env.find((kv) => kv.startsWith(`${k}=`))?.slice(k.length + 1)
    const scope = value('STUDIOPOOL_SCOPE')
    const id = value('STUDIOPOOL_INSTANCE_ID')
    if ((scope !== undefined && scopes.has(scope)) || (id !== undefined && ids.has(id))) out.push(Number(name))
  }
  return out
}

/** The slots the directory's sessions claimed (and any namespace of its scopes): namespace, veth, claim; the firewall when asked. */
function releaseNetworks(scopes: Set<string>, ids: ReadonlySet<string>, dropFirewall: boolean): void {
  const ip = which('ip')
  const slots: Array<{ n: number; scope: string; instanceId: string }> = []
  let names: string[] = []
  try {
    names = readdirSync(SLOTS_DIR).filter((n) => /^\d+$/.test(n))
  } catch {
    // no slots on this host
  }
  for (const name of names) {
    const claim = slotClaim(SLOTS_DIR, Number(name))
    if (!claim || !(scopes.has(claim.pool) || ids.has(claim.instanceId))) continue
    scopes.add(claim.pool)
    slots.push({ n: Number(name), scope: claim.pool, instanceId: claim.instanceId })
  }
  const nets = new Map<string, { netns: string; veth: string }>()
  for (const s of slots) nets.set(`${s.scope}/${s.n}`, slotNames(s.scope, s.n))
  for (const scope of scopes) for (const n of namespacesOf(scope)) nets.set(`${scope}/${n}`, slotNames(scope, n))
  if (ip) {
    for (const { netns, veth } of nets.values()) {
      bestEffort(() => execFileSync(ip, ['link', 'delete', veth], { stdio: 'ignore' }))
      bestEffort(() => execFileSync(ip, ['netns', 'delete', netns], { stdio: 'ignore' }))
    }
  }
  for (const s of slots) bestEffort(() => releaseSlot(SLOTS_DIR, s.n, s.scope, s.instanceId))
  const nft = dropFirewall ? which('nft') : null
  if (nft)
    for (const scope of scopes)
      bestEffort(() => execFileSync(nft, ['delete', 'table', 'inet', firewallTable(scope)], { stdio: 'ignore' }))
}

function bestEffort(fn: () => unknown): void {
  try {
    fn()
  } catch {
    // gone already, or not ours to remove
  }
}
