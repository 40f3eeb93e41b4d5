/**
 * Label names on Docker objects. studiopool's labels are `studiopool:<key>` (provider.ts); on
 * Docker objects they are written `studiopool.<key>`, Docker's reverse-DNS convention, so that
 * `docker ps --filter label=studiopool.pool=…` reads naturally. Other labels pass unchanged.
 */

/** Set by the pool when it replaces an instance under the same instanceId (pool-service.ts). */
export const LABEL_GENERATION = 'studiopool:generation'
/** Docker-only label on home volumes (`home`), never on containers. */
export const DOCKER_LABEL_KIND = 'studiopool.kind'
/** Docker-only labels on containers: what each asked for, so that placement needs no inspect per container. */
export const DOCKER_LABEL_CPUS = 'studiopool.request.nanocpus'
export const DOCKER_LABEL_MEMORY = 'studiopool.request.memory'
/** Appended to a suspended container's name: Docker labels cannot change after create, names can. */
export const SUSPENDED_SUFFIX = '-suspended'

export function toDockerLabelKey(key: string): string {
  return key.startsWith('studiopool:') ? `studiopool.${key.slice('studiopool:'.length)}` : key
}

export function fromDockerLabels(labels: Readonly<Record<string, string>> | null | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(labels ?? {})) {
    if (k === DOCKER_LABEL_KIND || k.startsWith('studiopool.request.')) continue
    out[k.startsWith('studiopool.') ? `studiopool:${k.slice('studiopool.'.length)}` : k] = v
  }
  return out
}
