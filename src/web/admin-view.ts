import type { TemplateConfig } from '../config/types.js'
import { KEY_NAME_PATTERN } from '../domain/ids.js'
import type { Assignment, Instance } from '../domain/instance.js'
import { KEY_ROLES, type KeyRole } from '../domain/keys.js'
import { csrfField, esc, formatDuration, layout, time, type Viewer } from './html.js'
import type { SharedStatus } from '../pool/pool-service.js'
import { sharedPoolsBlock } from './shared-view.js'

/** The key-name rule for the browser's own check: anchors are implied, and `-` is escaped for the `v` flag. */
const KEY_NAME_HTML_PATTERN = KEY_NAME_PATTERN.replace(/^\^|\$$/g, '').replace('-]', '\\-]')

export interface HistoryFilters {
  readonly user: string
  readonly template: string
  /** `YYYY-MM-DD` (UTC days), as typed. */
  readonly from: string
  readonly to: string
}

export interface KeyRow {
  readonly id: string
  readonly name: string
  readonly role: KeyRole
  readonly createdAt: number
  readonly revokedAt: number | null
  readonly lastUsedAt: number | null
  readonly source: 'store' | 'config'
}

export interface AdminViewData {
  readonly viewer: Viewer
  readonly now: number
  readonly templates: readonly {
    readonly template: TemplateConfig
    readonly counts: Readonly<Record<string, number>>
    readonly unavailable?: string
  }[]
  readonly poolMax: number
  readonly active: number
  readonly instances: readonly Instance[]
  /** Templates whose provider can stop an instance and keep its disk. */
  readonly suspendable: ReadonlySet<string>
  readonly queue: readonly Instance[]
  readonly chart: string
  /** Warm-pool forecasts beside actuals (web/forecast-section.ts); empty when no template has a warm-pool policy. */
  readonly forecasts?: string
  readonly history: readonly Assignment[]
  readonly historyLimit: number
  readonly filters: HistoryFilters
  readonly csvHref: string
  readonly keys: readonly KeyRow[]
  readonly notice?: { readonly text: string; readonly error?: boolean }
  /** A key just created: its secret is shown on this page only. */
  readonly createdKey?: { readonly name: string; readonly role: KeyRole; readonly secret: string }
  readonly sessionUrl: (id: string) => string
  /** Everyone's spend and every budget (web/cost-view.ts), already rendered. */
  readonly cost?: string
  /** What each provider isolates (architecture.md contract 5): a banner when sessions are not isolated. */
  /** Shared templates (issue 14): their instances and connections. */
  readonly shared?: readonly SharedStatus[]
  readonly isolation?: readonly {
    readonly provider: string
    readonly isolated: boolean
    readonly notes: readonly string[]
  }[]
}

const POOL_STATES = ['queued', 'provisioning', 'starting', 'ready', 'suspended', 'stopping'] as const

export function renderAdminView(d: AdminViewData): string {
  const notice = d.notice
    ? `<p class="notice${d.notice.error ? ' error' : ''}" role="status">${esc(d.notice.text)}</p>`
    : ''
  const created = d.createdKey
    ? `<section class="notice" role="alert" aria-labelledby="h-newkey"><h2 id="h-newkey">Key “${esc(d.createdKey.name)}” (${esc(d.createdKey.role)}) created</h2>` +
      `<p>Copy the key now: it is shown only this once, and only its hash is kept.</p><code class="secret mono" id="new-key">${esc(d.createdKey.secret)}</code></section>`
    : ''
  const unisolated = (d.isolation ?? []).filter((r) => !r.isolated)
  const isolation = unisolated.length
    ? `<section class="notice error" role="alert" aria-labelledby="h-iso"><h2 id="h-iso">Sessions are not isolated</h2>` +
      unisolated.map((r) => `<p><strong>${esc(r.provider)}</strong>: ${r.notes.map(esc).join(' ')}</p>`).join('') +
      `<p>See docs/security.md, “Session isolation by provider”.</p></section>`
    : ''
  const body =
    `<h1>Administration</h1>${isolation}${notice}${created}` +
    section('h-pool', 'Pool', poolTable(d)) +
    sharedPoolsBlock(d.shared ?? []) +
    section('h-chart', 'Instances by state, last 24 hours', d.chart) +
    (d.cost ? section('h-cost', 'Cost and budgets, this month', d.cost) : '') +
    (d.forecasts
      ? section('h-forecast', 'Warm-pool forecast beside actual sessions, last 24 hours', d.forecasts)
      : '') +
    section('h-inst', `Instances (${d.instances.length})`, instancesTable(d)) +
    section('h-queue', `Queue (${d.queue.length})`, queueTable(d)) +
    section('h-history', 'History', historyBlock(d)) +
    section('h-keys', 'API keys', keysBlock(d))
  return layout(body, { title: 'Administration', viewer: d.viewer, current: 'admin' })
}

function section(id: string, title: string, inner: string): string {
  return `<section aria-labelledby="${id}"><h2 id="${id}">${esc(title)}</h2>${inner}</section>`
}

function poolTable(d: AdminViewData): string {
  const rows = d.templates
    .map(({ template: t, counts, unavailable }) => {
      const cells = POOL_STATES.map((s) => `<td class="num">${counts[s] ?? 0}</td>`).join('')
      const total = POOL_STATES.reduce((a, s) => a + (s === 'queued' ? 0 : (counts[s] ?? 0)), 0)
      const note = unavailable
        ? `<br><span class="state state-failed" title="${esc(unavailable)}">unavailable</span>`
        : ''
      return `<tr><th scope="row">${esc(t.displayName)} <span class="tag mono">${esc(t.name)}</span>${note}</th>${cells}<td class="num">${total} / ${t.maxInstances}</td><td class="num">${t.minFree}</td></tr>`
    })
    .join('')
  return (
    `<p class="muted">${d.active} of at most ${d.poolMax} instances in use across the pool.</p>` +
    `<div class="table-wrap"><table><thead><tr><th scope="col">Template</th>${POOL_STATES.map((s) => `<th scope="col" class="num">${s}</th>`).join('')}` +
    `<th scope="col" class="num">active / max</th><th scope="col" class="num">warm (minFree)</th></tr></thead><tbody>${rows}</tbody></table></div>`
  )
}

function instancesTable(d: AdminViewData): string {
  if (d.instances.length === 0) return `<p class="muted">No instances.</p>`
  const csrf = csrfField(d.viewer.csrf)
  const rows = d.instances
    .map((i) => {
      const idle = i.ownerId && i.lastActivityAt ? formatDuration(d.now - i.lastActivityAt) : '–'
      const pct = i.state === 'ready' ? 100 : Math.round(i.progress)
      const act = (action: string, label: string, cls: string, confirm?: string) =>
        `<form method="post" action="/admin/instances/${esc(i.id)}/${action}"${confirm ? ` data-confirm="${esc(confirm)}"` : ''}>${csrf}` +
        `<button class="btn small ${cls}" type="submit" aria-label="${esc(`${label} ${i.id}`)}">${esc(label)}</button></form>`
      const actions: string[] = []
      if (i.state === 'ready' && d.suspendable.has(i.template))
        actions.push(
          act('suspend', 'Suspend', 'secondary', 'Suspend this instance? Its disk is kept; Resume brings it back.'),
        )
      if (i.state === 'suspended') actions.push(act('resume', 'Resume', 'secondary'))
      if (i.state === 'ready' || i.state === 'starting' || i.state === 'suspended')
        actions.push(act('restart', 'Restart', 'secondary', 'Restart this instance? Its user loses unsaved work.'))
      if (i.state !== 'stopping')
        actions.push(act('delete', 'Delete', 'danger', 'Delete this instance and end its session?'))
      const idCell =
        i.ownerId && i.state !== 'queued'
          ? `<a class="mono" href="${esc(d.sessionUrl(i.id))}">${esc(i.id)}</a>`
          : `<span class="mono">${esc(i.id)}</span>`
      return (
        `<tr data-admin-instance="${esc(i.id)}"><td>${idCell}</td><td>${esc(i.template)}</td><td><span class="state state-${esc(i.state)}">${esc(i.state)}</span></td>` +
        `<td>${i.ownerId ? esc(i.ownerId) : '<span class="muted">free</span>'}</td><td class="num">${formatDuration(d.now - i.createdAt)}</td><td class="num">${idle}</td>` +
        `<td><progress max="100" value="${pct}" aria-label="${esc(`progress of ${i.id}`)}">${pct}%</progress> <span class="muted">${pct}%</span>` +
        `${i.progressMessage && i.state !== 'ready' ? `<br><span class="muted">${esc(i.progressMessage)}</span>` : ''}</td><td>${actions.join(' ')}</td></tr>`
      )
    })
    .join('')
  return (
    `<div class="table-wrap"><table><thead><tr><th scope="col">Instance</th><th scope="col">Template</th><th scope="col">State</th><th scope="col">Owner</th>` +
    `<th scope="col" class="num">Age</th><th scope="col" class="num">Idle</th><th scope="col">Progress</th><th scope="col">Actions</th></tr></thead><tbody>${rows}</tbody></table></div>`
  )
}

function queueTable(d: AdminViewData): string {
  if (d.queue.length === 0) return `<p class="muted">Nobody is waiting.</p>`
  const rows = d.queue
    .map(
      (q, n) =>
        `<tr><td class="num">${n + 1}</td><td>${esc(q.template)}</td><td>${esc(q.ownerId ?? '')}</td><td>${time(q.createdAt)}</td><td class="num">${formatDuration(d.now - q.createdAt)}</td></tr>`,
    )
    .join('')
  return `<div class="table-wrap"><table><thead><tr><th scope="col" class="num">#</th><th scope="col">Template</th><th scope="col">User</th><th scope="col">Since</th><th scope="col" class="num">Waiting</th></tr></thead><tbody>${rows}</tbody></table></div>`
}

function historyBlock(d: AdminViewData): string {
  const f = d.filters
  const opts = [
    `<option value="">all</option>`,
    ...d.templates.map(
      ({ template: t }) =>
        `<option value="${esc(t.name)}"${f.template === t.name ? ' selected' : ''}>${esc(t.name)}</option>`,
    ),
  ].join('')
  const form =
    `<form class="filters" method="get" action="/admin#h-history" aria-label="History filters">` +
    `<div class="field"><label for="f-user">User</label><input type="text" id="f-user" name="user" value="${esc(f.user)}" maxlength="200" autocomplete="off"></div>` +
    `<div class="field"><label for="f-template">Template</label><select id="f-template" name="template">${opts}</select></div>` +
    `<div class="field"><label for="f-from">From (UTC day)</label><input type="date" id="f-from" name="from" value="${esc(f.from)}"></div>` +
    `<div class="field"><label for="f-to">To (UTC day, inclusive)</label><input type="date" id="f-to" name="to" value="${esc(f.to)}"></div>` +
    `<button class="btn secondary" type="submit">Filter</button> <a class="btn secondary" href="${esc(d.csvHref)}" download>Download CSV</a></form>`
  if (d.history.length === 0) return form + `<p class="muted">No sessions match.</p>`
  const rows = d.history
    .map(
      (r) =>
        `<tr><td>${esc(r.userId)}</td><td>${esc(r.template)}</td><td class="mono">${esc(r.instanceId)}</td><td>${time(r.startedAt)}</td>` +
        `<td>${r.endedAt === null ? '<span class="state state-ready">running</span>' : time(r.endedAt)}</td><td class="num">${formatDuration((r.endedAt ?? d.now) - r.startedAt)}</td>` +
        `<td>${esc(r.endReason ?? '')}</td><td>${esc(r.keyName ?? '')}</td><td class="num">${r.cost === null ? '' : esc(r.cost.toFixed(2))}</td></tr>`,
    )
    .join('')
  const more = d.history.length >= d.historyLimit ? ` (the newest ${d.historyLimit}; the CSV has them all)` : ''
  return (
    form +
    `<div class="table-wrap"><table><caption>${d.history.length} sessions${more}</caption><thead><tr><th scope="col">User</th><th scope="col">Template</th><th scope="col">Instance</th>` +
    `<th scope="col">Started</th><th scope="col">Ended</th><th scope="col" class="num">Duration</th><th scope="col">Reason</th><th scope="col">Via</th><th scope="col" class="num">Cost</th></tr></thead><tbody>${rows}</tbody></table></div>`
  )
}

function keysBlock(d: AdminViewData): string {
  const csrf = csrfField(d.viewer.csrf)
  const rows = d.keys
    .map((k) => {
      const status = k.revokedAt
        ? `<span class="state state-terminated">revoked</span>`
        : `<span class="state state-ready">active</span>`
      const action =
        k.source === 'config'
          ? '<span class="muted">from the configuration</span>'
          : k.revokedAt
            ? ''
            : `<form method="post" action="/admin/keys/${esc(k.id)}/revoke" data-confirm="${esc(`Revoke the key "${k.name}"? Clients using it stop working at once.`)}">${csrf}<button class="btn small danger" type="submit" aria-label="${esc(`Revoke ${k.name}`)}">Revoke</button></form>`
      return (
        `<tr data-key="${esc(k.name)}"><td>${esc(k.name)}</td><td>${esc(k.role)}</td><td>${status}</td><td>${k.createdAt ? time(k.createdAt) : '–'}</td>` +
        `<td>${k.lastUsedAt ? time(k.lastUsedAt) : '–'}</td><td>${action}</td></tr>`
      )
    })
    .join('')
  const roles = KEY_ROLES.map((r) => `<option value="${r}"${r === 'requester' ? ' selected' : ''}>${r}</option>`).join(
    '',
  )
  return (
    `<form class="inline" method="post" action="/admin/keys" aria-label="Create an API key">${csrf}` +
    `<div class="field"><label for="k-name">New key name</label><input type="text" id="k-name" name="name" required pattern="${esc(KEY_NAME_HTML_PATTERN)}" maxlength="64" autocomplete="off"></div>` +
    `<div class="field"><label for="k-role">Role</label><select id="k-role" name="role">${roles}</select></div>` +
    `<button class="btn" type="submit">Create key</button></form>` +
    `<div class="table-wrap"><table><thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Status</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">Action</th></tr></thead><tbody>${rows}</tbody></table></div>`
  )
}
