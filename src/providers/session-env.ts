/**
 * What every provider gives a session the same way (DESIGN contract 5's identity environment): the
 * `{{token}}`s its template's command, env and mounts may use, and the STUDIOPOOL_* variables that
 * name the session to the app. Each provider adds its own (PORT, HOST, a scope marker) around them.
 */
import type { InstanceSpec } from './provider.js'

/** Replaces `{{name}}` with its token; an unknown name stays as written. */
export function substitute(value: string, tokens: Readonly<Record<string, string>>): string {
  return value.replace(/\{\{(\w+)\}\}/g, (m, name: string) => tokens[name] ?? m)
}

/** The tokens every provider offers: the session's path, ids, app token, user and port. */
export function baseTokens(spec: InstanceSpec, port: number): Record<string, string> {
  return {
    port: String(port),
    basePath: spec.basePath,
    instanceId: spec.id,
    appToken: spec.appToken,
    user: spec.ownerId ?? '',
    sessionUrl: spec.sessionUrl,
  }
}

/**
 * The identity environment: which pool, instance and template this is, where its session and its
 * progress callback are, and (known at create only for a cold start; a warm instance learns its
 * user from X-Forwarded-User) who owns it.
 */
export function identityEnv(spec: InstanceSpec): Record<string, string> {
  return {
    BASE_PATH: spec.basePath,
    STUDIOPOOL_POOL: spec.poolId,
    STUDIOPOOL_INSTANCE_ID: spec.id,
    STUDIOPOOL_TEMPLATE: spec.template.name,
    STUDIOPOOL_SESSION_URL: spec.sessionUrl,
    STUDIOPOOL_PROGRESS_URL: spec.progressUrl,
    STUDIOPOOL_PROGRESS_TOKEN: spec.progressToken,
    ...(spec.ownerId ? { STUDIOPOOL_USER: spec.ownerId } : {}),
  }
}
