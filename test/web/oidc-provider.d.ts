// The subset of oidc-provider (no bundled types) that the login test uses.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http'
  interface Account {
    accountId: string
    claims(): Promise<Record<string, unknown>>
  }
  interface ProviderConfig {
    clients: Record<string, unknown>[]
    claims?: Record<string, string[]>
    scopes?: string[]
    findAccount(ctx: unknown, id: string): Promise<Account | undefined>
    features?: Record<string, unknown>
    pkce?: { required?: () => boolean }
    cookies?: { keys: string[] }
  }
  export default class Provider {
    constructor(issuer: string, config: ProviderConfig)
    callback(): (req: IncomingMessage, res: ServerResponse) => void
  }
}
