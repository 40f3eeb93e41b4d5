import * as client from 'openid-client'
import type { Config } from '../config/types.js'
import { isUserId } from '../domain/ids.js'

type OidcConfig = NonNullable<Config['dashboard']['oidc']>

/** What the login needs to keep between the redirect and the callback (in a signed cookie). */
export interface OidcPending {
  readonly state: string
  readonly nonce: string
  readonly verifier: string
}

export interface OidcIdentity {
  readonly userId: string
  readonly groups: readonly string[]
}

/**
 * OpenID Connect login: authorization code flow with PKCE (S256), state and nonce, through
 * `openid-client` v6. The issuer's metadata is discovered on first use and kept; a failed
 * discovery is retried on the next login rather than cached.
 *
 * Plain-http issuers are accepted only on loopback (a test or a local IdP); anywhere else the
 * library's https requirement stands.
 */
export class OidcLogin {
  readonly #cfg: OidcConfig
  readonly #redirectUri: string
  #discovered: Promise<client.Configuration> | undefined

  constructor(cfg: OidcConfig, redirectUri: string) {
    this.#cfg = cfg
    this.#redirectUri = redirectUri
  }

  get redirectUri(): string {
    return this.#redirectUri
  }

  #configuration(): Promise<client.Configuration> {
    if (!this.#discovered) {
      const issuer = new URL(this.#cfg.issuer)
      const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(issuer.hostname)
      const auth = this.#cfg.clientSecret ? client.ClientSecretPost(this.#cfg.clientSecret) : client.None()
      this.#discovered = client
        .discovery(issuer, this.#cfg.clientId, undefined, auth, {
          ...(issuer.protocol === 'http:' && loopback ? { execute: [client.allowInsecureRequests] } : {}),
          timeout: 10,
        })
        .catch((err: unknown) => {
          this.#discovered = undefined
          throw err
        })
    }
    return this.#discovered
  }

  /** The identity provider's authorization URL, and what the callback must check. */
  async begin(): Promise<{ url: string; pending: OidcPending }> {
    const config = await this.#configuration()
    const verifier = client.randomPKCECodeVerifier()
    const pending: OidcPending = { state: client.randomState(), nonce: client.randomNonce(), verifier }
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: this.#redirectUri,
      scope: this.#cfg.scopes,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state: pending.state,
      nonce: pending.nonce,
    })
    return { url: url.href, pending }
  }

  /**
   * Trades the code for tokens (checking state, nonce and PKCE) and reads the user and groups from
   * the ID token, or from the userinfo endpoint when the ID token does not carry the groups claim.
   */
  async finish(callbackQuery: string, pending: OidcPending): Promise<OidcIdentity> {
    const config = await this.#configuration()
    const current = new URL(this.#redirectUri)
    current.search = callbackQuery
    const tokens = await client.authorizationCodeGrant(config, current, {
      pkceCodeVerifier: pending.verifier,
      expectedState: pending.state,
      expectedNonce: pending.nonce,
      idTokenExpected: true,
    })
    const claims: Record<string, unknown> = { ...(tokens.claims() ?? {}) }
    const want = [this.#cfg.userClaim, this.#cfg.groupsClaim]
    if (want.some((c) => claims[c] === undefined) && tokens.access_token && config.serverMetadata().userinfo_endpoint) {
      const info = await client.fetchUserInfo(
        config,
        tokens.access_token,
        typeof claims.sub === 'string' ? claims.sub : client.skipSubjectCheck,
      )
      for (const c of want) if (claims[c] === undefined && info[c] !== undefined) claims[c] = info[c]
    }
    const user = claims[this.#cfg.userClaim]
    if (!isUserId(user)) {
      throw new Error(`the identity provider sent no usable "${this.#cfg.userClaim}" claim`)
    }
    return { userId: user, groups: groupsOf(claims[this.#cfg.groupsClaim]) }
  }
}

/** A groups claim as a list: an array of strings, or one space/comma-separated string. */
export function groupsOf(v: unknown): string[] {
  const list = Array.isArray(v) ? v : typeof v === 'string' ? v.split(/[\s,]+/) : []
  return list.filter((g): g is string => typeof g === 'string' && g.length > 0 && g.length <= 200).slice(0, 200)
}
