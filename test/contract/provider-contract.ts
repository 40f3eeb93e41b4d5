/**
 * The provider contract (architecture.md contract 4, src/providers/provider.ts), one suite for every
 * provider. Each implementation calls it from its `*.contract.test.ts`:
 *
 * ```ts
 * providerContract({ name: 'local', make: async () => ({ provider, template, cleanup }), skip: { suspend: 'no stop/start' } })
 * ```
 * The suite knows nothing of any backend. `make` must build a provider whose pool id is
 * `poolId` (default CONTRACT_POOL_ID), already `init`ialized, on a backend holding no resources
 * of that pool; `cleanup` releases it. Everything the suite creates it destroys in `after()`.
 */
import assert from 'node:assert/strict'
import { after, before, describe as suite, it } from 'node:test'
import pino from 'pino'
import type { TemplateConfig } from '../../src/config/types.js'
import { newInstanceId } from '../../src/domain/ids.js'
import {
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type OperationOptions,
  type Provider,
  type ProviderInstance,
} from '../../src/providers/provider.js'

export const CONTRACT_POOL_ID = 'contract-pool'

/** Parts of the contract a provider may lack, each skipped with a reason. */
export type ContractFeature = 'suspend' | 'address' | 'concurrentCreate'

export interface ProviderContractOptions {
  name: string
  make: () => Promise<{ provider: Provider; template: TemplateConfig; cleanup: () => Promise<void> }>
  skip?: Partial<Record<ContractFeature, string>>
  /** The pool id the provider was made with. Default CONTRACT_POOL_ID. */
  poolId?: string
  /** A well-formed ref the backend does not know. Default `'unknown-ref'`. */
  unknownRef?: string
  /** Per-test timeout, ms. Default 60 s. */
  timeoutMs?: number
}

const LIVE = new Set(['pending', 'running'])

export function providerContract(opts: ProviderContractOptions): void {
  const poolId = opts.poolId ?? CONTRACT_POOL_ID
  const skip = opts.skip ?? {}
  const timeout = opts.timeoutMs ?? 60_000

  suite(`provider contract: ${opts.name}`, { timeout: timeout * 10 }, () => {
    let provider: Provider
    let template: TemplateConfig
    let cleanup: (() => Promise<void>) | undefined
    const created = new Set<string>()
    const op: OperationOptions = { log: pino({ level: 'silent' }) }

    function spec(id = newInstanceId(), extra: Record<string, string> = {}): InstanceSpec {
      return {
        id,
        poolId,
        template,
        basePath: `/s/${id}/`,
        labels: { [LABEL_POOL]: poolId, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: template.name, ...extra },
        progressUrl: `http://127.0.0.1:9/api/v1/instances/${id}/progress`,
        progressToken: 'contract-progress-token',
        appToken: 'test-app-token',
        ownerId: null,
        sessionUrl: 'http://127.0.0.1:1/s/x/',
      }
    }

    async function create(s: InstanceSpec): Promise<ProviderInstance> {
      const inst = await provider.create(s, op)
      created.add(inst.ref)
      return inst
    }

    function assertGoneOrTerminated(found: ProviderInstance | undefined, what: string): void {
      if (found) assert.equal(found.state, 'terminated', `${what}: expected absent or terminated, got ${found.state}`)
    }

    before(async () => {
      const made = await opts.make()
      provider = made.provider
      template = made.template
      cleanup = made.cleanup
      assert.equal(
        provider.validateTemplate(template).length,
        0,
        `the contract template must be valid: ${provider.validateTemplate(template).join('; ')}`,
      )
    })

    after(async () => {
      if (provider) {
        for (const ref of created) await provider.destroy(ref, op).catch(() => {})
      }
      await cleanup?.()
    })

    it('create returns a ref, a live state and the pool, instance and template labels', { timeout }, async () => {
      const s = spec()
      const inst = await create(s)
      assert.equal(typeof inst.ref, 'string')
      assert.ok(inst.ref.length > 0, 'ref is not empty')
      assert.equal(inst.instanceId, s.id)
      assert.equal(inst.template, template.name)
      assert.ok(LIVE.has(inst.state), `state after create is pending or running, got ${inst.state}`)
      assert.equal(inst.labels[LABEL_POOL], poolId)
      assert.equal(inst.labels[LABEL_INSTANCE], s.id)
      assert.equal(inst.labels[LABEL_TEMPLATE], template.name)
      assert.notEqual(inst.ref, s.id, "the provider's ref is its own id, never studiopool's instanceId")
    })

    it('reports an address as an http(s) base URL', { timeout, skip: skip.address }, async () => {
      const inst = await create(spec())
      // Some backends learn the address only once the resource runs: look again through describe.
      const deadline = Date.now() + timeout / 2
      let address = inst.address
      while (!address && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100))
        address = (await provider.describe([inst.ref], op)).get(inst.ref)?.address ?? null
      }
      assert.ok(address, 'an address is reported')
      const url = new URL(address)
      assert.match(url.protocol, /^https?:$/)
    })

    it('create is idempotent on the instanceId', { timeout }, async () => {
      const s = spec()
      const first = await create(s)
      const second = await create(s)
      assert.equal(second.ref, first.ref)
      assert.equal(second.instanceId, s.id)
      const all = (await provider.list(op)).filter((i) => i.instanceId === s.id && i.state !== 'terminated')
      assert.equal(all.length, 1, 'exactly one live resource for the instanceId')
    })

    it('concurrent creates of one instanceId make one resource', { timeout, skip: skip.concurrentCreate }, async () => {
      const s = spec()
      const results = await Promise.all([create(s), create(s), create(s)])
      assert.equal(new Set(results.map((r) => r.ref)).size, 1, 'one ref for all three')
      const all = (await provider.list(op)).filter((i) => i.instanceId === s.id && i.state !== 'terminated')
      assert.equal(all.length, 1)
    })

    it('describe is batched: known refs present, unknown refs absent', { timeout }, async () => {
      const a = await create(spec())
      const b = await create(spec())
      const unknown = opts.unknownRef ?? 'unknown-ref'
      const map = await provider.describe([a.ref, b.ref, unknown], op)
      assert.ok(map.has(a.ref) && map.has(b.ref), 'both known refs are described')
      assert.equal(map.has(unknown), false, 'an unknown ref is absent')
      assert.equal(map.get(a.ref)!.instanceId, a.instanceId)
      assert.equal(map.get(b.ref)!.instanceId, b.instanceId)
      assert.ok(LIVE.has(map.get(a.ref)!.state))
      assert.equal((await provider.describe([], op)).size, 0, 'no refs, empty map')
    })

    it('list finds exactly the resources labelled with this pool', { timeout }, async () => {
      const a = await create(spec())
      const b = await create(spec())
      const listed = await provider.list(op)
      for (const i of listed) assert.equal(i.labels[LABEL_POOL], poolId, `listed ${i.ref} carries our pool label`)
      const refs = new Set(listed.map((i) => i.ref))
      assert.ok(refs.has(a.ref) && refs.has(b.ref), 'both new resources are listed')
      // Nothing live that this suite did not create (the backend starts empty for this pool).
      for (const i of listed)
        if (i.state !== 'terminated') assert.ok(created.has(i.ref), `unexpected live resource ${i.ref}`)
    })

    it('destroy ends the resource; destroying again (or an unknown ref) resolves', { timeout }, async () => {
      const inst = await create(spec())
      await provider.destroy(inst.ref, op)
      assertGoneOrTerminated((await provider.describe([inst.ref], op)).get(inst.ref), 'describe after destroy')
      assertGoneOrTerminated(
        (await provider.list(op)).find((i) => i.ref === inst.ref),
        'list after destroy',
      )
      await provider.destroy(inst.ref, op)
      await provider.destroy(opts.unknownRef ?? 'unknown-ref', op)
      // The other resources are untouched.
      const others = [...created].filter((r) => r !== inst.ref)
      if (others.length > 0) {
        const map = await provider.describe(others, op)
        for (const r of others)
          if (map.has(r)) assert.ok(LIVE.has(map.get(r)!.state), `${r} still live after destroying another`)
      }
    })

    it('create after destroy makes a new resource under the same instanceId', { timeout }, async () => {
      const s = spec()
      const first = await create(s)
      await provider.destroy(first.ref, op)
      const second = await create(s)
      assert.notEqual(second.ref, first.ref, 'a fresh resource')
      assert.equal(second.instanceId, s.id)
      assert.ok(LIVE.has(second.state))
    })

    it('labels survive: extra labels come back from describe and list', { timeout }, async () => {
      const s = spec(newInstanceId(), { [LABEL_OWNER]: 'alice', 'contract-extra': 'yes' })
      const inst = await create(s)
      const described = (await provider.describe([inst.ref], op)).get(inst.ref)
      const listed = (await provider.list(op)).find((i) => i.ref === inst.ref)
      for (const found of [inst, described, listed]) {
        assert.ok(found)
        assert.equal(found.labels[LABEL_OWNER], 'alice')
        assert.equal(found.labels['contract-extra'], 'yes')
        assert.equal(found.labels[LABEL_INSTANCE], s.id)
        assert.equal(found.instanceId, s.id)
        assert.equal(found.template, template.name)
      }
    })

    it('stop and start suspend and resume', { timeout, skip: skip.suspend }, async () => {
      assert.equal(
        provider.capabilities.supportsSuspend,
        true,
        'a provider that cannot suspend skips this with a reason',
      )
      assert.ok(provider.stop && provider.start)
      const inst = await create(spec())
      await provider.stop(inst.ref, op)
      const stopped = (await provider.describe([inst.ref], op)).get(inst.ref)
      assert.ok(
        stopped && (stopped.state === 'stopped' || stopped.state === 'pending'),
        `stopped, got ${stopped?.state}`,
      )
      await provider.start(inst.ref, op)
      const started = (await provider.describe([inst.ref], op)).get(inst.ref)
      assert.ok(started && LIVE.has(started.state), `live again, got ${started?.state}`)
      assert.equal(started.instanceId, inst.instanceId)
    })
  })
}
