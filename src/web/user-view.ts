import type { TemplateConfig } from '../config/types.js'
import type { Assignment, Instance } from '../domain/instance.js'
import type { SessionStopStatus } from '../domain/pending-stop.js'
import { csrfField, esc, formatDuration, layout, progressBar, STATE_LABEL, time, type Viewer } from './html.js'

export interface TemplateCard {
  readonly template: TemplateConfig
  /** Why the template cannot start now (its program is missing…). */
  readonly unavailable?: string
  /** The user's live instance of this template, if any. */
  readonly instance?: Instance
  readonly queuePosition?: number | null
  readonly sessionUrl?: string
  /** The session's pending stop (shown as a warning within `widget.warnBefore`). */
  readonly stop?: SessionStopStatus
}

export interface UserViewData {
  readonly viewer: Viewer
  readonly cards: readonly TemplateCard[]
  readonly history: readonly Assignment[]
  readonly now: number
  readonly notice?: { readonly text: string; readonly error?: boolean }
  /** The user's spend and budgets (web/cost-view.ts), already rendered. */
  readonly spend?: string
}

const STARTING = new Set(['queued', 'provisioning', 'starting'])

/** The user view: the templates they may use, their live sessions with progress, and their history. */
export function renderUserView(d: UserViewData): string {
  const starting = d.cards.some((c) => c.instance && STARTING.has(c.instance.state))
  const notice = d.notice
    ? `<p class="notice${d.notice.error ? ' error' : ''}" role="status">${esc(d.notice.text)}</p>`
    : ''
  const cards = d.cards.length
    ? `<div class="cards">${d.cards.map((c) => card(c, d.viewer)).join('')}</div>`
    : `<p class="panel">No template is open to you. Ask an administrator to add you to one of the groups a template allows.</p>`
  const body =
    `<h1>My sessions</h1>${notice}<section aria-labelledby="h-templates"><h2 id="h-templates">Start or open a session</h2>${cards}</section>${d.spend ?? ''}` +
    `<section aria-labelledby="h-history"><h2 id="h-history">My history</h2>${history(d.history, d.now)}</section>`
  return layout(body, {
    title: 'My sessions',
    viewer: d.viewer,
    current: 'user',
    events: '/events',
    // Without JavaScript, a page with a starting session refreshes itself; with it, server-sent events update the bar.
    head: starting ? '<noscript><meta http-equiv="refresh" content="3"></noscript>' : '',
  })
}

function card(c: TemplateCard, viewer: Viewer): string {
  const t = c.template
  const hid = `t-${t.name}`
  const head = `<h3 id="${hid}-h">${esc(t.displayName)}</h3>${t.description ? `<p class="desc">${esc(t.description)}</p>` : ''}`
  let inner: string
  const i = c.instance
  if (i) {
    const ready = i.state === 'ready'
    const pct = ready ? 100 : i.progress
    const msg = i.state === 'queued' && c.queuePosition ? `Position in queue: ${c.queuePosition}` : i.progressMessage
    inner =
      `<div class="inst" data-instance="${esc(i.id)}" data-state="${esc(i.state)}">` +
      `<div class="status" aria-live="polite"><p>Status: <span class="js-state state state-${esc(i.state)}">${esc(STATE_LABEL[i.state] ?? i.state)}</span></p>` +
      `<div class="js-progress-wrap"${ready ? ' hidden' : ''}>${progressBar(`p-${i.id}`, pct, `${t.displayName}: start progress`)}` +
      `<p class="js-msg muted">${esc(msg)}</p></div></div>` +
      `<p class="muted">Since ${time(i.assignedAt ?? i.createdAt)}</p>` +
      warning(c.stop, i.id, viewer, hid) +
      `<div class="actions"><a class="btn js-open" href="${esc(c.sessionUrl ?? '#')}"${ready ? '' : ' hidden'}>Open</a>` +
      (i.state === 'suspended'
        ? `<form method="post" action="/sessions/${esc(i.id)}/resume">${csrfField(viewer.csrf)}<button class="btn" type="submit" aria-describedby="${hid}-h">Resume</button></form>`
        : '') +
      `<form method="post" action="/sessions/${esc(i.id)}/stop" data-confirm="Stop this session? Unsaved work in it is lost.">${csrfField(viewer.csrf)}` +
      `<button class="btn secondary" type="submit" aria-describedby="${hid}-h">Stop</button></form></div></div>`
  } else if (t.shared) {
    // A shared app (issue 14): one address for everyone, nothing to launch or stop.
    inner =
      `<p class="muted">Shared with your team.</p><div class="actions">` +
      `<a class="btn" href="/a/${esc(t.name)}/" aria-describedby="${hid}-h">Open</a></div>`
  } else if (c.unavailable) {
    inner = `<p class="muted">Not available right now: ${esc(c.unavailable)}</p><div class="actions"><button class="btn" type="button" disabled>Launch</button></div>`
  } else {
    inner =
      `<div class="actions"><form method="post" action="/launch">${csrfField(viewer.csrf)}<input type="hidden" name="template" value="${esc(t.name)}">` +
      `<button class="btn" type="submit" aria-describedby="${hid}-h">Launch</button></form></div>`
  }
  return `<article class="card" id="${hid}" data-template="${esc(t.name)}" aria-labelledby="${hid}-h">${head}${inner}</article>`
}

const STOP_WHY: Record<string, string> = {
  idle: 'it has been idle',
  lifetime: 'it reached its maximum lifetime',
  budget: 'the budget is used up',
  schedule: 'its schedule ends',
}

/** The warning before a stop, with Keep working (an idle stop) and Suspend (where the provider can). */
function warning(st: SessionStopStatus | undefined, id: string, viewer: Viewer, hid: string): string {
  if (!st?.warn || !st.pendingStop) return ''
  const left = st.pendingStop.at - st.now
  const when = left > 0 ? `in ${formatDuration(left)}` : 'now'
  const form = (action: string, label: string) =>
    `<form method="post" action="/sessions/${esc(id)}/${action}">${csrfField(viewer.csrf)}` +
    `<button class="btn" type="submit" aria-describedby="${hid}-h">${label}</button></form>`
  return (
    `<div class="notice warn js-stop-warning" role="alert"><p>This session stops ${when}: ${esc(STOP_WHY[st.pendingStop.reason] ?? st.pendingStop.reason)}.</p>` +
    `<div class="actions">${st.canKeepWorking ? form('keep', 'Keep working') : ''}${st.canSuspend ? form('suspend', 'Suspend') : ''}</div></div>`
  )
}

function history(rows: readonly Assignment[], now: number): string {
  if (rows.length === 0) return `<p class="muted">You have not used a session yet.</p>`
  const trs = rows
    .map(
      (r) =>
        `<tr><td>${esc(r.template)}</td><td>${time(r.startedAt)}</td><td>${r.endedAt === null ? '<span class="state state-ready">running</span>' : time(r.endedAt)}</td>` +
        `<td class="num">${formatDuration((r.endedAt ?? now) - r.startedAt)}</td><td>${esc(r.endReason ?? '')}</td></tr>`,
    )
    .join('')
  return (
    `<div class="table-wrap"><table><caption>Your last ${rows.length} sessions</caption><thead><tr><th scope="col">Template</th><th scope="col">Started</th>` +
    `<th scope="col">Ended</th><th scope="col" class="num">Duration</th><th scope="col">Ended because</th></tr></thead><tbody>${trs}</tbody></table></div>`
  )
}
