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
import type { Logger } from 'pino'
import { ProviderError } from '../../domain/errors.js'
import type { IsolationPlan, IsolationSettings } from './local-isolation.js'
import {
  namespacesOf,
  setupSessionNetwork,
  slotCount,
  slotOf,
  teardownSessionNetwork,
  type SessionSlot,
} from './local-network.js'
import { NAME } from './local-record.js'

/**
 * Slot claims: which instance of which pool holds a session slot (a uid and a /30), kept as one
 * file per slot, host-wide, so that no two sessions on this host ever share either.
 */

/**
 * Where slot claims live: host-wide (uids and subnets are the host's, whatever pool or data
 * directory a server uses), on /run, which is cleared at boot together with every namespace.
 */
export const SLOTS_DIR = '/run/studiopool/slots'

export interface SlotClaim {
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

/** The instance of this pool holding a slot, if any. */
export function slotHolder(slotsDir: string, slot: number, pool: string): string | null {
  const c = readClaim(join(slotsDir, String(slot)))
  return c && c.pool === pool ? c.instanceId : null
}

/** The claim of a slot, whatever pool holds it; null when free, resting or unreadable. */
export function slotClaim(slotsDir: string, slot: number): SlotClaim | null {
  return readClaim(join(slotsDir, String(slot)))
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

/**
 * The slots of one local provider (one scope): claiming one for a new session with its network,
 * giving it back, and sweeping namespaces no live session holds. `isStale(instanceId)` says
 * whether a holder of this scope is over (no running record, no create under way).
 */
export class SessionSlots {
  constructor(
    readonly settings: IsolationSettings,
    readonly scope: string,
    readonly isStale: (holder: string) => boolean,
    readonly dir: string = SLOTS_DIR,
  ) {}

  of(n: number): SessionSlot {
    return slotOf(this.settings, this.scope, n)
  }

  /** The slot of a new session and (netns) its network; null when sessions are not isolated. */
  async claim(plan: IsolationPlan, instanceId: string): Promise<SessionSlot | null> {
    if (plan.kind === 'none') return null
    let n: number
    try {
      n = claimSlot(
        this.dir,
        slotCount(this.settings),
        { pool: this.scope, instanceId, netnsOf: (k) => this.of(k).netns },
        this.isStale,
      )
    } catch (err) {
      throw new ProviderError(NAME, (err as Error).message, { cause: err, retryable: true })
    }
    const slot = this.of(n)
    if (plan.kind !== 'netns') return slot
    try {
      await setupSessionNetwork(plan, slot)
    } catch (err) {
      releaseSlot(this.dir, n, this.scope, instanceId)
      throw new ProviderError(NAME, `cannot create the network namespace of ${instanceId}: ${(err as Error).message}`, {
        cause: err,
        retryable: true,
      })
    }
    return slot
  }

  /**
   * Gives back an instance's namespace and slot, only while the slot is still this instance's: an
   * old record of a slot that was given back and claimed by another session must never tear down
   * that session's network. Idempotent.
   */
  async release(plan: IsolationPlan, instanceId: string, slot: SessionSlot): Promise<void> {
    if (slotHolder(this.dir, slot.slot, this.scope) !== instanceId) return
    await teardownSessionNetwork(plan, slot)
    releaseSlot(this.dir, slot.slot, this.scope, instanceId)
  }

  /**
   * Namespaces of this scope that no live session holds (its processes were killed behind our back
   * and nobody destroyed it, or a create died half-way): removed, with their slot claims.
   */
  async sweep(plan: IsolationPlan, log: Logger): Promise<void> {
    if (plan.kind !== 'netns') return
    for (const n of namespacesOf(this.scope)) {
      const holder = slotHolder(this.dir, n, this.scope)
      if (holder && !this.isStale(holder)) continue
      const slot = this.of(n)
      log.info({ netns: slot.netns, instanceId: holder }, 'local: removing a network namespace no live session holds')
      await teardownSessionNetwork(plan, slot)
      if (holder) releaseSlot(this.dir, n, this.scope, holder)
    }
  }
}
