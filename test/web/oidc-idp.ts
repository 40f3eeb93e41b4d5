import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import Provider from 'oidc-provider'
import type { Page } from 'playwright-core'

/** Users of the test identity provider and their groups. */
export const IDP_USERS: Record<string, { groups: string[] }> = {
  carol: { groups: ['researchers', 'ops'] },
  dave: { groups: ['students'] },
}

export const IDP_CLIENT = { id: 'studiopool', secret: 'a-client-secret-for-the-test-only' }

export interface TestIdp {
  readonly issuer: string
  /** Starts answering, for a client whose redirect URI is now known (our server listens after the IdP). */
  attach(redirectUri: string): void
  close(): Promise<void>
}

/**
 * A real OpenID provider (`oidc-provider`, dev interactions: a login form and a consent button) on
 * loopback port 0. It listens first, because our configuration needs its issuer URL.
 */
export async function startIdp(): Promise<TestIdp> {
  const idp: Server = createServer()
  await new Promise<void>((resolve) => idp.listen(0, '127.0.0.1', resolve))
  const issuer = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`
  return {
    issuer,
    attach(redirectUri) {
      const provider = new Provider(issuer, {
        clients: [
          {
            client_id: IDP_CLIENT.id,
            client_secret: IDP_CLIENT.secret,
            redirect_uris: [redirectUri],
            response_types: ['code'],
            grant_types: ['authorization_code'],
            token_endpoint_auth_method: 'client_secret_post',
          },
        ],
        claims: { openid: ['sub'], groups: ['groups'] },
        scopes: ['openid', 'groups'],
        findAccount: async (_ctx, id) =>
          IDP_USERS[id]
            ? { accountId: id, claims: async () => ({ sub: id, groups: IDP_USERS[id]!.groups }) }
            : undefined,
        features: { devInteractions: { enabled: true } },
        pkce: { required: () => true },
        cookies: { keys: ['test-only-cookie-key-0123456789abcdef'] },
      })
      idp.on('request', provider.callback())
    },
    async close() {
      idp.closeAllConnections()
      await new Promise((r) => idp.close(r))
    },
  }
}

/** The `dashboard.oidc` lines of our configuration for this IdP. */
export function oidcYaml(issuer: string): string[] {
  return [
    '  login: oidc',
    '  oidc:',
    `    issuer: ${issuer}`,
    `    clientId: ${IDP_CLIENT.id}`,
    `    clientSecret: ${IDP_CLIENT.secret}`,
    '    scopes: openid groups',
  ]
}

/** On the IdP's login page: signs in as `user` (dev interactions take any password) and consents. */
export async function signInAtIdp(page: Page, user: string): Promise<void> {
  await page.locator('input[name=login]').fill(user)
  await page.locator('input[name=password]').fill('any')
  await page.getByRole('button', { name: 'Sign-in' }).click()
  await page.getByRole('button', { name: 'Continue' }).click()
}
