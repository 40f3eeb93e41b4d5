import { csrfField, esc, layout, messagePage } from './html.js'
import type { LoginPolicy } from './login-policy.js'

// Pages of the dashboard that no single area owns: error titles and the login pages.

/** The title of an error page for a status. */
export function titleFor(status: number): string {
  if (status === 400) return 'That did not work'
  if (status === 403) return 'Not allowed'
  if (status === 404) return 'Not found'
  if (status === 409) return 'Not possible right now'
  if (status === 503) return 'Please try again later'
  return 'Something went wrong'
}

/** Why the configured login is off (the same words as the start-up warning), with the code for scripts. */
export function loginRefusedPage(policy: LoginPolicy): string {
  const r = policy.refused!
  return layout(
    `<section class="panel narrow" aria-labelledby="h-off"><h1 id="h-off">Sign-in is turned off</h1>` +
      `<p>This server is configured with <code>dashboard.login: ${esc(policy.configured)}</code>, but ${esc(r.reason)}. So it does not sign anyone in.</p>` +
      `<p>What the operator can do: ${esc(r.fix)}. See docs/security.md, “Logins”.</p>` +
      `<p class="muted">Error code <code>LOGIN_DISABLED</code>. Session links handed out by applications still work.</p></section>`,
    { title: 'Sign-in is off' },
  )
}

export function devOnlyLoopback(): string {
  return messagePage(
    'Development sign-in works only on this machine',
    'dashboard.login is "dev": anyone could claim any name, so it answers only requests from 127.0.0.1 or ::1. Configure oidc or header login for other users.',
    { back: { href: '/', label: 'Back' } },
  )
}

export function devLoginPage(next: string, csrf: string, user: string, error?: string): string {
  const err = error ? `<p class="notice error" role="alert">${esc(error)}</p>` : ''
  return layout(
    `<section class="panel narrow login" aria-labelledby="h-login"><h1 id="h-login">Sign in</h1>${err}` +
      `<p class="muted">Development sign-in: type any name. It is offered only to this machine (loopback).</p>` +
      `<form method="post" action="/login">${csrfField(csrf)}<input type="hidden" name="next" value="${esc(next)}">` +
      `<div class="field"><label for="user">User name</label><input type="text" id="user" name="user" required maxlength="200" autocomplete="username" autofocus value="${esc(user)}"></div>` +
      `<div class="field"><label for="groups">Groups (optional, comma-separated)</label><input type="text" id="groups" name="groups" maxlength="1000" autocomplete="off"></div>` +
      `<button class="btn" type="submit">Sign in</button></form></section>`,
    { title: 'Sign in' },
  )
}
