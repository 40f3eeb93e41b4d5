/** A small client of the REST API, for the CLI (and scripts). Errors carry the API's code. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

export class ApiClient {
  constructor(
    readonly baseUrl: string,
    readonly key: string | undefined,
  ) {}

  async call<T = unknown>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
    const { request } = await import('undici') // loaded by the commands that call the API only
    let res
    try {
      res = await request(new URL(path, this.baseUrl), {
        method,
        headers: {
          ...(this.key ? { authorization: `Bearer ${this.key}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          accept: 'application/json',
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: 30_000,
        bodyTimeout: 30_000,
      })
    } catch (err) {
      throw new ApiError(0, 'UNREACHABLE', `cannot reach ${this.baseUrl}: ${(err as Error).message}`)
    }
    const text = await res.body.text()
    const ctype = String(res.headers['content-type'] ?? '')
    const data = ctype.includes('json') && text ? JSON.parse(text) : text
    if (res.statusCode >= 400) {
      const e = (data as { error?: { code?: string; message?: string } })?.error
      throw new ApiError(res.statusCode, e?.code ?? 'HTTP_' + res.statusCode, e?.message ?? `HTTP ${res.statusCode}`)
    }
    return data as T
  }
}
