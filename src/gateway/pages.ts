import type { RouteEntry } from '../domain/routes.js'

/**
 * The gateway's own pages: small, themed alike, one inline stylesheet, no JavaScript needed.
 * Every dynamic value goes through `esc`.
 */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) =>
    c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : '&#39;',
  )
}

const CSS = `
:root{color-scheme:light dark;--fg:#1d2733;--mut:#5b6776;--bg:#f4f6f8;--card:#fff;--acc:#2f6fde;--bd:#dde3ea}
@media (prefers-color-scheme:dark){:root{--fg:#e6ebf0;--mut:#9aa7b4;--bg:#12171d;--card:#1b232c;--acc:#6fa0ff;--bd:#2b3642}}
*{box-sizing:border-box}body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
main{background:var(--card);border:1px solid var(--bd);border-radius:10px;padding:2rem 2.25rem;max-width:34rem;width:calc(100% - 2rem)}
h1{font-size:1.3rem;margin:0 0 .75rem}p{margin:.5rem 0;color:var(--mut)}a{color:var(--acc)}
.btn{display:inline-block;margin-top:1rem;padding:.5rem 1rem;border-radius:6px;background:var(--acc);color:#fff;text-decoration:none;border:0;font:inherit;cursor:pointer}
form{display:inline}.alt{margin-left:1rem}
progress{width:100%;height:1rem;margin:.75rem 0}.brand{font-size:.8rem;letter-spacing:.08em;text-transform:uppercase;color:var(--mut);margin-bottom:.5rem}
code{font-size:.9em}`

function layout(title: string, body: string, head = ''): string {
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">` +
    `<meta name="robots" content="noindex">${head}<title>${esc(title)} · studiopool</title><style>${CSS}</style></head>` +
    `<body><main><div class="brand">studiopool</div><h1>${esc(title)}</h1>${body}</main></body></html>`
  )
}

export interface Page {
  readonly status: number
  readonly html: string
  readonly headers?: Readonly<Record<string, string>>
}

const STATE_TEXT: Partial<Record<RouteEntry['state'], string>> = {
  queued: 'Waiting for a free place in the pool',
  provisioning: 'Preparing your machine',
  starting: 'Starting the application',
}

/** Shown while the instance is queued, provisioning or starting; reloads itself every few seconds and so reaches the app once it is ready. */
export function progressPage(route: RouteEntry, refreshSeconds = 2): Page {
  const pct = Math.max(0, Math.min(100, Math.round(route.progress)))
  const queue =
    route.state === 'queued' && route.queuePosition
      ? `<p>Position in queue: <strong>${esc(route.queuePosition)}</strong></p>`
      : ''
  const msg = route.progressMessage ? `<p>${esc(route.progressMessage)}</p>` : ''
  const html = layout(
    'Your session is starting',
    `<p>${esc(STATE_TEXT[route.state] ?? 'Starting')}…</p>${queue}<progress max="100" value="${pct}">${pct}%</progress>${msg}` +
      `<p>This page refreshes by itself and opens your session as soon as it is ready.</p>`,
    `<meta http-equiv="refresh" content="${refreshSeconds}">`,
  )
  return { status: 503, html, headers: { 'retry-after': String(refreshSeconds) } }
}

/** A session that is unknown, ended or failed. */
export function endedPage(dashboardUrl: string, reason?: string | null): Page {
  const why = reason ? `<p>Reason: ${esc(reason)}</p>` : ''
  return {
    status: 404,
    html: layout(
      'This session has ended or does not exist',
      `<p>The address may be old, or the session was stopped.</p>${why}<a class="btn" href="${esc(dashboardUrl)}">Back to the dashboard</a>`,
    ),
  }
}

/** A stopped (suspended) or stopping session. */
export function pausedPage(dashboardUrl: string, state: string): Page {
  return {
    status: 503,
    html: layout(
      'This session is not running',
      `<p>The session is ${esc(state)}. You can resume it from the dashboard.</p><a class="btn" href="${esc(dashboardUrl)}">Open the dashboard</a>`,
    ),
    headers: { 'retry-after': '10' },
  }
}

export function badGatewayPage(status: 502 | 503 | 504, dashboardUrl: string): Page {
  const title = status === 504 ? 'The application took too long to answer' : 'The application does not answer'
  return {
    status,
    html: layout(
      title,
      `<p>Your session exists, but its application did not respond. It may still be starting, or it may have stopped. Try again in a moment.</p><a class="btn" href="">Try again</a> <a href="${esc(dashboardUrl)}">Dashboard</a>`,
    ),
    headers: { 'retry-after': '5' },
  }
}

export function loginPage(loginHref: string, message = 'Please sign in to open this session.'): Page {
  return {
    status: 401,
    html: layout('Sign in needed', `<p>${esc(message)}</p><a class="btn" href="${esc(loginHref)}">Sign in</a>`),
  }
}

/**
 * A launch link opened in a browser signed in as someone else (issue 8, login CSRF): ask, never switch
 * silently. "Continue" is a POST to the same link with a one-shot form secret; "Stay" changes nothing.
 * Not framable, so the button cannot be clicked through another site's page.
 */
export function switchUserPage(opts: { current: string; target: string; action: string; stayHref: string }): Page {
  return {
    status: 200,
    html: layout(
      `Continue as ${opts.target}?`,
      `<p>You are signed in as <strong>${esc(opts.current)}</strong>. This link opens <strong>${esc(opts.target)}</strong>’s session.</p>` +
        `<p>Continue only if you expected to work as ${esc(opts.target)}: you would be signed out as ${esc(opts.current)} in this browser.</p>` +
        `<form method="post" action="${esc(opts.action)}"><button class="btn" type="submit">Continue as ${esc(opts.target)}</button></form>` +
        `<a class="btn alt" href="${esc(opts.stayHref)}">Stay ${esc(opts.current)}</a>`,
    ),
    // `origin`, not the gateway's usual no-referrer: with no-referrer the browser sends `Origin: null`
    // on the form's POST, which the gateway must refuse; `origin` never sends the path (the token) either.
    headers: {
      'x-frame-options': 'DENY',
      'content-security-policy': "frame-ancestors 'none'; form-action 'self'",
      'referrer-policy': 'origin',
    },
  }
}

/** The "continue as …?" form came from elsewhere, or too late. */
export function switchRefusedPage(dashboardUrl: string): Page {
  return {
    status: 403,
    html: layout(
      'This confirmation has expired',
      `<p>The confirmation was not sent from its own page, or you signed in as someone else meanwhile. Nothing was changed. Open the link again to be asked once more.</p><a class="btn" href="${esc(dashboardUrl)}">Dashboard</a>`,
    ),
  }
}

export function forbiddenPage(dashboardUrl: string, otherRequester = false): Page {
  if (otherRequester) {
    return {
      status: 403,
      html: layout(
        'Open this session from its own application',
        `<p>This browser was signed in by a link from another application, which opens only the sessions that application asked for. Open this session from the application that gave it to you, or sign in to the dashboard.</p><a class="btn" href="${esc(dashboardUrl)}">Dashboard</a>`,
      ),
    }
  }
  return {
    status: 403,
    html: layout(
      'Not your session',
      `<p>This session belongs to another user. Sign in as its owner, or open your own sessions from the dashboard.</p><a class="btn" href="${esc(dashboardUrl)}">Dashboard</a>`,
    ),
  }
}

export function notFoundPage(dashboardUrl: string): Page {
  return {
    status: 404,
    html: layout(
      'Not found',
      `<p>There is nothing at this address.</p><a class="btn" href="${esc(dashboardUrl)}">Dashboard</a>`,
    ),
  }
}

/** A shared app that turns visitors away now (its schedule, a budget): why, and the way back. */
export function refusedPage(status: 403 | 503, message: string, dashboardUrl: string): Page {
  return {
    status,
    html: layout(
      status === 403 ? 'Budget reached' : 'Not available now',
      `<p>${esc(message)}</p><a class="btn" href="${esc(dashboardUrl)}">Dashboard</a>`,
    ),
  }
}

export function unavailablePage(message: string): Page {
  return {
    status: 503,
    html: layout('Please try again', `<p>${esc(message)}</p><a class="btn" href="">Try again</a>`),
    headers: { 'retry-after': '5' },
  }
}

/** A shared app (issue 14) with no instance that has room yet: it is being started for you; refreshes itself. */
export function sharedStartingPage(displayName: string, starting: number, refreshSeconds = 2): Page {
  const what = starting > 0 ? 'Starting the application' : 'Asking for an instance of the application'
  const html = layout(
    `${displayName} is starting`,
    `<p>${esc(what)}…</p><progress max="100"></progress>` +
      `<p>This page refreshes by itself and opens the application as soon as it has room for you.</p>`,
    `<meta http-equiv="refresh" content="${refreshSeconds}">`,
  )
  return { status: 503, html, headers: { 'retry-after': String(refreshSeconds) } }
}
