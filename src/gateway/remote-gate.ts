import type { Config } from '../config/types.js'
import { BUDGET_SCOPES, covers, type BudgetScope } from '../cost/budgets.js'
import type { SharedGate, SharedGateSnapshot, SharedRefusal } from '../domain/shared.js'
import { outsideScheduleRefusal } from '../schedule/refusal.js'
import { type RemoteOptions, under } from './remote.js'

type KnownBudget = SharedGateSnapshot['budgets'][number] & { readonly scope: BudgetScope }

export interface RemoteSharedGate extends SharedGate {
  /** Resolves once the first snapshot arrived (or after `timeoutMs`, keeping none). */
  ready(timeoutMs?: number): Promise<void>
  close(): void
}

/**
 * The shared templates' gate in split mode (`serve --role gateway`; docs/shared-pools.md
 * "Refusals"): the same decisions as the pool's in one process. Schedules are decided here, from the
 * same configuration file and the clock; hard budgets from the API's `GET /api/v1/gateway/shared-gate`,
 * polled every `intervalMs` (the worker interval: budgets change once per worker cycle), so a
 * visitor never waits for the API. While the API cannot be reached the last snapshot stands (none
 * at first: no budget refuses until the first answer), as the route table does.
 */
export function createRemoteSharedGate(
  opts: RemoteOptions & { config: Pick<Config, 'templates' | 'budgets' | 'worker'>; now?: () => number },
): RemoteSharedGate {
  const now = opts.now ?? Date.now
  // A gateway-only configuration may carry no templates or budgets at all.
  const all = (opts.config.templates as Config['templates'] | undefined) ?? []
  const templates = new Map(all.filter((t) => t.shared).map((t) => [t.name, t]))
  const hard = ((opts.config.budgets as Config['budgets'] | undefined) ?? []).some((b) => b.mode === 'hard')
  const polls = templates.size > 0 && hard
  const every = (opts.config.worker as Config['worker'] | undefined)?.intervalMs ?? 2_000
  const intervalMs = Math.min(Math.max(every, 500), 10_000)
  let budgets: KnownBudget[] = []
  let timer: NodeJS.Timeout | null = null
  let closed = false
  let first: Promise<void> = Promise.resolve()

  async function poll(): Promise<void> {
    try {
      const res = await fetch(under(opts.serviceUrl, '/api/v1/gateway/shared-gate'), {
        headers: { authorization: `Bearer ${opts.key}` },
        signal: AbortSignal.timeout(5_000),
      })
      if (!res.ok) throw new Error(`answered ${res.status}`)
      const body = (await res.json()) as Partial<SharedGateSnapshot>
      // Scopes this gateway does not know (a newer API) match no one; checked once per answer, not per visit.
      budgets = (Array.isArray(body.budgets) ? body.budgets : []).filter((b): b is KnownBudget =>
        (BUDGET_SCOPES as readonly string[]).includes(b.scope),
      )
    } catch (err) {
      opts.log.debug({ err: (err as Error).message }, 'shared gate: no budget snapshot from the API; keeping the last')
    }
  }
  function loop(): void {
    if (closed) return
    timer = setTimeout(() => void poll().finally(loop), intervalMs)
    timer.unref()
  }
  if (polls) {
    first = poll()
    void first.finally(loop)
  }

  return {
    admit(template, userId, groups): SharedRefusal | null {
      const t = templates.get(template)
      if (!t) return null
      const outside = outsideScheduleRefusal(t.name, t.schedule, now())
      if (outside) return outside
      const who = { userId, keyName: null, template, groups }
      const hit = budgets.find((b) => covers(b.scope, b.key, who))
      return hit ? { status: 403, code: 'BUDGET_EXCEEDED', message: hit.message } : null
    },
    async ready(timeoutMs = 5_000) {
      let t: NodeJS.Timeout | undefined
      await Promise.race([first, new Promise<void>((r) => (t = setTimeout(r, timeoutMs)))])
      clearTimeout(t)
    },
    close() {
      closed = true
      if (timer) clearTimeout(timer)
    },
  }
}
