import type { Config } from '../config/types.js'
import type { Assignment, Instance } from '../domain/instance.js'
import type { Provider } from '../providers/provider.js'
import type { BudgetStatus } from '../cost/budgets.js'
import type { UsageReport } from '../cost/usage.js'

/** How the API builds session addresses (the gateway's token service behind it). */
export interface Links {
  /** The clean session URL, `…/s/<id>/`. */
  sessionUrl(instanceId: string): string
  /**
   * The launch URL: the session URL with a short-lived, single-use token for that user. `requester`
   * (the instance's keyName) scopes the cookie the link gives to that requester's sessions.
   */
  launchUrl(instanceId: string, userId: string, requester?: string | null): Promise<string> | string
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

/**
 * The SSH key pair of the template's instances, as the seed's GET_STATUS `keyName` reported it
 * (issue 9); undefined where the provider has none.
 */
export function keyPairOf(
  deps: { readonly config: Config; readonly providers: ReadonlyMap<string, Provider> },
  template: string,
): string | undefined {
  const t = deps.config.templates.find((x) => x.name === template)
  return t ? deps.providers.get(t.provider)?.keyPairName?.(t) : undefined
}

/**
 * The public shape of an instance (GET_STATUS, REST), with its tags spread in, as the seed did (`...tags`).
 * `keyName` is the seed's: the EC2 key pair, absent where there is none; the name of the API key that
 * requested the session is `requesterKey`.
 */
export function instanceView(inst: Instance, links: Links, queuePosition: number | null = null, keyPair?: string) {
  // A tag named `keyName` must not pass for the key pair where there is none.
  const { keyName: _tagKeyName, ...tags } = inst.tags
  return {
    // Tags first, so that a tag named like a field (`url`, `userId`…) can never override it.
    ...tags,
    instanceId: inst.id,
    url: links.sessionUrl(inst.id),
    state: inst.state,
    userId: inst.ownerId,
    template: inst.template,
    progress: inst.progress,
    progressMessage: inst.progressMessage,
    queuePosition,
    generation: inst.generation,
    ...(keyPair ? { keyName: keyPair } : {}),
    requesterKey: inst.keyName,
    failureReason: inst.failureReason,
    endReason: inst.endReason,
    createdAt: iso(inst.createdAt),
    readyAt: iso(inst.readyAt),
    assignedAt: iso(inst.assignedAt),
    lastActivityAt: iso(inst.lastActivityAt),
    endedAt: iso(inst.endedAt),
  }
}

export type InstanceView = ReturnType<typeof instanceView>

export function assignmentView(a: Assignment) {
  return {
    id: a.id,
    instanceId: a.instanceId,
    template: a.template,
    userId: a.userId,
    keyName: a.keyName,
    startedAt: iso(a.startedAt),
    endedAt: iso(a.endedAt),
    durationSeconds: a.endedAt === null ? null : Math.round((a.endedAt - a.startedAt) / 1000),
    endReason: a.endReason,
    cost: a.cost,
  }
}

/** One budget's state for the API and the dashboard (docs/cost.md "Budgets"). */
export function budgetView(b: BudgetStatus) {
  return {
    label: b.budget.label,
    scope: b.budget.scope,
    name: b.key,
    mode: b.budget.mode,
    amount: b.budget.amount,
    spend: Math.round(b.spend * 100) / 100,
    state: b.state,
    periodFrom: new Date(b.from).toISOString(),
    periodTo: new Date(b.to).toISOString(),
    stopRunningGraceSeconds: b.budget.stopGraceMs === null ? null : Math.round(b.budget.stopGraceMs / 1000),
  }
}

/** GET /api/v1/usage: the cost report (src/cost/usage.ts) with ISO times and its budgets. */
export function usageView(r: UsageReport & { budgets: readonly BudgetStatus[] }) {
  return {
    from: new Date(r.from).toISOString(),
    to: new Date(r.to).toISOString(),
    currency: r.currency,
    total: r.total,
    idle: r.idle,
    shared: r.shared,
    byUser: r.byUser,
    byGroup: r.byGroup,
    byTemplate: r.byTemplate,
    byRequester: r.byRequester,
    byMarket: r.byMarket,
    budgets: r.budgets.map(budgetView),
  }
}
