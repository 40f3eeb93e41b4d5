import type { Logger } from 'pino'
import type { TemplateConfig } from '../config/types.js'
import type { Instance } from '../domain/instance.js'
import { isLive } from '../domain/instance.js'
import {
  earliestStop,
  templateStops,
  withinWarning,
  type DeadlineSource,
  type PendingStop,
  type SessionStopStatus,
} from '../domain/pending-stop.js'

export interface PendingStopsDeps {
  readonly templates: ReadonlyMap<string, TemplateConfig>
  readonly log: Logger
  /** `widget.warnBefore`: the lead time of the warning, ms. */
  readonly warnBeforeMs: number
  /** Whether the template's provider can suspend (and resume) its instances. */
  readonly canSuspend: (template: string) => boolean
}

/**
 * The one place that says when a session will be stopped (issue 13): the template's idle timeout
 * and maximum lifetime (the same deadlines the worker culls at, domain/pending-stop.ts), plus the
 * extra deadline sources registered at start (budgets, schedules). The earliest wins.
 */
export class PendingStops {
  readonly #d: PendingStopsDeps
  readonly #sources: { readonly name: string; readonly source: DeadlineSource }[] = []

  constructor(deps: PendingStopsDeps) {
    this.#d = deps
  }

  /**
   * Adds a deadline source (a budget's `budgetStopAt`, a schedule's window end). Registered at
   * start by the composition root; returns a function that removes it again.
   */
  register(name: string, source: DeadlineSource): () => void {
    const entry = { name, source }
    this.#sources.push(entry)
    return () => {
      const i = this.#sources.indexOf(entry)
      if (i >= 0) this.#sources.splice(i, 1)
    }
  }

  /** The instance's earliest pending stop, or null. */
  async of(inst: Instance): Promise<PendingStop | null> {
    const t = this.#d.templates.get(inst.template)
    const own = t ? templateStops(inst, t) : []
    const extra: (PendingStop | null | undefined)[] = []
    for (const { name, source } of this.#sources) {
      try {
        extra.push(await source(inst))
      } catch (err) {
        this.#d.log.warn(
          { instanceId: inst.id, source: name, err: err instanceof Error ? err.message : String(err) },
          'a deadline source failed; skipped for this instance',
        )
      }
    }
    return earliestStop([...own, ...extra])
  }

  /** What the banner and the dashboard show for one instance at `now`; undefined once it is no longer live. */
  async status(inst: Instance, now: number): Promise<SessionStopStatus | undefined> {
    if (!isLive(inst.state)) return undefined
    const stop = await this.of(inst)
    const warnBeforeMs = this.#d.warnBeforeMs
    return {
      instanceId: inst.id,
      state: inst.state,
      pendingStop: stop,
      now,
      warnBeforeMs,
      warn: withinWarning(stop, now, warnBeforeMs),
      canKeepWorking: stop?.reason === 'idle',
      canSuspend: inst.state === 'ready' && this.#d.canSuspend(inst.template),
    }
  }
}
