import type { TemplateConfig } from '../config/types.js'
import { type Instance, isLive, LIVE_STATES } from '../domain/instance.js'
import type { RouteEntry } from '../domain/routes.js'
import { TAG_DRAINING } from '../domain/shared.js'
import type { Store } from '../store/store.js'

/** Where the pool publishes route changes (the gateway's RouteHub in-process). */
export interface RoutePublisher {
  upsert(route: RouteEntry): void
  remove(instanceId: string, reason: string): void
  reset(routes: readonly RouteEntry[]): void
}

/**
 * Route projection: what the gateway's table holds for each live instance, published around every
 * change the pool makes (one place, so no change can skip it).
 */
export class RouteProjection {
  #version = 0

  constructor(
    private readonly store: Store,
    private readonly routes: RoutePublisher,
    private readonly templates: ReadonlyMap<string, TemplateConfig>,
    private readonly background: (p: Promise<unknown>) => void,
  ) {}

  /**
   * Bumped on every change this process publishes (assignments, releases, state changes), so that
   * readers can cache what depends on them (GET_STATUS lists) until the next change.
   */
  get version(): number {
    return this.#version
  }

  /** The instance's route as it is now: upserted while live, removed once ended. */
  publish(inst: Instance): void {
    this.#version++
    if (isLive(inst.state)) {
      if (inst.state === 'queued') this.background(this.publishQueue(inst.template))
      else this.routes.upsert(this.routeEntry(inst, null))
    } else this.routes.remove(inst.id, inst.endReason ?? inst.state)
  }

  /** The instance's route goes (released, evicted, handed over) before its row says so. */
  remove(id: string, reason: string): void {
    this.#version++
    this.routes.remove(id, reason)
  }

  async publishQueue(template: string): Promise<void> {
    const queued = await this.store.listQueued(template, 10_000)
    queued.forEach((q, i) => this.routes.upsert(this.routeEntry(q, i + 1)))
  }

  /** Publishes every live instance to the route table (start-up, resync). */
  async publishAll(): Promise<void> {
    const live = await this.store.listInstances({ states: LIVE_STATES })
    const positions = queuePositions(live)
    this.#version++
    this.routes.reset(live.map((i) => this.routeEntry(i, positions.get(i.id) ?? null)))
  }

  routeEntry(inst: Instance, queuePosition: number | null): RouteEntry {
    const t = this.templates.get(inst.template)
    return {
      instanceId: inst.id,
      ownerId: inst.ownerId,
      template: inst.template,
      state: inst.state,
      address: inst.state === 'ready' || inst.state === 'starting' ? inst.address : null,
      pathMode: t?.pathMode ?? 'strip',
      hostHeader: t?.hostHeader ?? 'target',
      progress: inst.progress,
      progressMessage: inst.progressMessage,
      queuePosition,
      generation: inst.generation,
      failureReason: inst.failureReason,
      ...(t?.activityIgnore.length ? { activityIgnore: t.activityIgnore } : {}),
      requester: inst.keyName,
      ...(t?.injectWidget ? { injectWidget: true } : {}),
      ...(t?.upstreamHeaders && Object.keys(t.upstreamHeaders).length ? { upstreamHeaders: t.upstreamHeaders } : {}),
      ...(t?.shared && inst.ownerId === null ? { shared: { draining: inst.tags[TAG_DRAINING] !== undefined } } : {}),
    }
  }
}

/** 1-based queue position per queued instance, per template, oldest first (as store.queuePosition). */
export function queuePositions(instances: readonly Instance[]): Map<string, number> {
  const positions = new Map<string, number>()
  const perTemplate = new Map<string, number>()
  for (const q of instances.filter((i) => i.state === 'queued').sort((a, b) => a.createdAt - b.createdAt)) {
    const n = (perTemplate.get(q.template) ?? 0) + 1
    perTemplate.set(q.template, n)
    positions.set(q.id, n)
  }
  return positions
}
