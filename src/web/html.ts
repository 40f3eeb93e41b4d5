import { ASSETS } from './assets.js'

/**
 * HTML helpers for the dashboard. Every page is rendered on the server; every dynamic value goes
 * through `esc` (or `attr`, the same thing). Templates are plain template literals: the pages are
 * few and small, and a template engine would be one more thing to audit.
 */
export function esc(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) =>
    c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : '&#39;',
  )
}

/** Who is looking at the page (for the header), with the form token of their session. */
export interface Viewer {
  readonly userId: string
  readonly admin: boolean
  readonly csrf: string
}

export interface LayoutOptions {
  readonly title: string
  readonly viewer?: Viewer
  /** Which nav item is current. */
  readonly current?: 'user' | 'admin'
  /** Extra markup inside <head> (the no-JS refresh fallback). */
  readonly head?: string
  /** `data-events` URL for the live progress script. */
  readonly events?: string
}

export function layout(body: string, o: LayoutOptions): string {
  const v = o.viewer
  const nav = v
    ? `<nav aria-label="Main"><ul>` +
      `<li><a href="/"${o.current === 'user' ? ' aria-current="page"' : ''}>My sessions</a></li>` +
      (v.admin ? `<li><a href="/admin"${o.current === 'admin' ? ' aria-current="page"' : ''}>Admin</a></li>` : '') +
      `</ul></nav>` +
      `<div class="who"><span class="user" title="Signed in as ${esc(v.userId)}">${esc(v.userId)}${v.admin ? ' <span class="tag">admin</span>' : ''}</span>` +
      `<form method="post" action="/logout">${csrfField(v.csrf)}<button class="btn link" type="submit">Sign out</button></form></div>`
    : ''
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">` +
    `<title>${esc(o.title)} · studiopool</title><link rel="stylesheet" href="${ASSETS.css.path}">` +
    `<script src="${ASSETS.js.path}" defer></script>${o.head ?? ''}</head>` +
    `<body${o.events ? ` data-events="${esc(o.events)}"` : ''}><a class="skip" href="#main">Skip to content</a>` +
    `<header class="top"><a class="brand" href="/">studiopool</a>${nav}</header>` +
    `<main id="main" tabindex="-1">${body}</main></body></html>`
  )
}

export function csrfField(token: string): string {
  return `<input type="hidden" name="csrf" value="${esc(token)}">`
}

/** A small page with a heading, a message and a way back (errors, notices). */
export function messagePage(
  title: string,
  message: string,
  o: { viewer?: Viewer; back?: { href: string; label: string } } = {},
): string {
  const back = o.back ?? { href: '/', label: 'Back to the dashboard' }
  return layout(
    `<section class="panel narrow"><h1>${esc(title)}</h1><p>${esc(message)}</p><p><a class="btn" href="${esc(back.href)}">${esc(back.label)}</a></p></section>`,
    {
      title,
      viewer: o.viewer,
    },
  )
}

/** `1 h 05 min`, `4 min 10 s`, `12 s`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '–'
  const s = Math.floor(ms / 1000)
  const d = Math.floor(s / 86_400)
  const h = Math.floor((s % 86_400) / 3600)
  const m = Math.floor((s % 3600) / 60)
  if (d > 0) return `${d} d ${h} h`
  if (h > 0) return `${h} h ${String(m).padStart(2, '0')} min`
  if (m > 0) return `${m} min ${String(s % 60).padStart(2, '0')} s`
  return `${s} s`
}

/** A `<time>` element in UTC; the script rewrites it in the reader's own time zone. */
export function time(ms: number | null): string {
  if (ms === null) return '–'
  const d = new Date(ms)
  const text = d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC'
  return `<time datetime="${d.toISOString()}">${text}</time>`
}

/** A `<progress>` with its number for screen readers and browsers without the element. */
export function progressBar(id: string, pct: number, label: string): string {
  const p = Math.max(0, Math.min(100, Math.round(pct)))
  return `<progress id="${esc(id)}" class="js-progress" max="100" value="${p}" aria-label="${esc(label)}">${p}%</progress>`
}

export const STATE_LABEL: Record<string, string> = {
  queued: 'Waiting in the queue',
  provisioning: 'Preparing the machine',
  starting: 'Starting the application',
  ready: 'Ready',
  stopping: 'Stopping',
  suspended: 'Suspended (disk kept)',
  terminated: 'Ended',
  failed: 'Failed',
}
