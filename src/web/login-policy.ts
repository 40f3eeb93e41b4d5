import type { Config } from '../config/types.js'
import { coversLoopback, isLoopbackHost, overlapping, peerSet } from '../gateway/peers.js'

/** What one provider says about its sessions' reach (providers/provider.ts IsolationReport, the part logins need). */
export interface SessionReach {
  readonly provider: string
  readonly sessionsReachLoopback: boolean
  readonly sessionNetworks: readonly string[]
}

export type LoginMode = Config['dashboard']['login']

/** The login the dashboard offers, decided once at start. */
export interface LoginPolicy {
  /** `dashboard.login` as configured. */
  readonly configured: LoginMode
  /** What is offered: the configured mode, or `off` when it was refused. */
  readonly effective: LoginMode
  /**
   * Why the configured mode was refused, and what to do; absent when it was not. `reason` is shown on
   * the public login page too; `detail` (internal addresses and networks) goes to the log only.
   */
  readonly refused?: { readonly reason: string; readonly fix: string; readonly detail?: string }
}

/**
 * The login rules of issue 8 (docs/security.md "Logins"). A login that anyone could borrow falls
 * back to `off`, and the server says why at start, on the login page and in POST /login's answer.
 *
 * - `dev` (type any name) only when the public URL is plain http on a loopback host, no proxy is
 *   trusted (`server.trustProxy` empty: behind a same-host TLS proxy every internet client is a
 *   loopback peer), and no provider reports that session code reaches this machine's listeners from
 *   loopback (unless `dashboard.allowDevLoginFromSessions` says so in words).
 * - `header` only when no trusted proxy address is one that sessions could connect from: a loopback
 *   entry while sessions reach loopback, or an entry within a provider's session networks.
 * - `oidc` and `off` as configured.
 */
export function decideLogin(config: Pick<Config, 'server' | 'dashboard'>, reach: readonly SessionReach[]): LoginPolicy {
  const configured = config.dashboard.login
  const refuse = (reason: string, fix: string, detail?: string): LoginPolicy => ({
    configured,
    effective: 'off',
    refused: { reason, fix, ...(detail ? { detail } : {}) },
  })
  const loopbackReachers = reach.filter((r) => r.sessionsReachLoopback).map((r) => r.provider)

  if (configured === 'dev') {
    const pub = new URL(config.server.publicUrl)
    if (pub.protocol !== 'http:' || !isLoopbackHost(pub.hostname)) {
      return refuse(
        `server.publicUrl is ${pub.origin}, not plain http on a loopback address, so users reach this server from other machines and anyone could sign in under any name`,
        'use dashboard.login: oidc, or header behind a login proxy',
      )
    }
    if (config.server.trustProxy.length) {
      return refuse(
        'server.trustProxy is set: behind a proxy on this machine every client looks like loopback, so anyone could sign in under any name',
        'use dashboard.login: oidc, or header with the proxy in dashboard.header.trustedProxies',
        `server.trustProxy: ${config.server.trustProxy.join(', ')}`,
      )
    }
    if (loopbackReachers.length && !config.dashboard.allowDevLoginFromSessions) {
      return refuse(
        `sessions of the ${loopbackReachers.join(', ')} provider can connect to this server from loopback, so code inside any session could sign in as any user, admins included`,
        'run the server so that sessions are isolated (docs/security.md), use oidc or header login, or, if you are the only user, set dashboard.allowDevLoginFromSessions: true',
      )
    }
  }

  if (configured === 'header') {
    const trusted = peerSet(config.dashboard.header?.trustedProxies ?? [])
    if (loopbackReachers.length && coversLoopback(trusted)) {
      return refuse(
        `dashboard.header.trustedProxies trusts loopback, and sessions of the ${loopbackReachers.join(', ')} provider can connect from loopback, so code inside a session could send the user header itself`,
        'run the login proxy on another address and list only that address, or isolate the sessions (docs/security.md)',
      )
    }
    for (const r of reach) {
      for (const net of r.sessionNetworks) {
        const hit = overlapping(trusted, net)
        if (hit.length) {
          return refuse(
            `dashboard.header.trustedProxies lies within a network sessions of the ${r.provider} provider connect from, so code inside a session could send the user header itself`,
            "list only the login proxy's own address, outside the session networks",
            `trustedProxies ${hit.join(', ')} within ${net}`,
          )
        }
      }
    }
  }
  return { configured, effective: configured }
}

/**
 * `server.trustProxy` entries that sessions could connect from: the gateway and the API would believe
 * a session's own X-Forwarded-For/-Proto/-Host (its client address, scheme and host, not an identity;
 * identity headers are never taken from clients). One warning line each, for the start-up log.
 */
export function proxyTrustWarnings(config: Pick<Config, 'server'>, reach: readonly SessionReach[]): string[] {
  const trusted = peerSet(config.server.trustProxy)
  const out: string[] = []
  const loopbackReachers = reach.filter((r) => r.sessionsReachLoopback).map((r) => r.provider)
  if (loopbackReachers.length && coversLoopback(trusted)) {
    out.push(
      `server.trustProxy trusts loopback, and sessions of the ${loopbackReachers.join(', ')} provider can connect from loopback: they can set the X-Forwarded-For/-Proto/-Host the gateway believes. List only the proxy's own address.`,
    )
  }
  for (const r of reach) {
    for (const net of r.sessionNetworks) {
      const hit = overlapping(trusted, net)
      if (hit.length)
        out.push(
          `server.trustProxy (${hit.join(', ')}) lies within ${net}, a network sessions of the ${r.provider} provider connect from: they can set the X-Forwarded-For/-Proto/-Host the gateway believes.`,
        )
    }
  }
  return out
}
