/**
 * The provider contract (test/contract/provider-contract.ts) against the kubernetes provider and
 * its official client (@kubernetes/client-node), pointed by a kubeconfig file at the in-process
 * fake API server (test/helpers/fake-kube-api.ts: HTTP at the wire level, every object checked
 * against the Kubernetes 1.36 OpenAPI schema). No API server or kubelet can run on these machines.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, it } from 'node:test'
import pino from 'pino'
import { KubernetesProvider } from '../../src/providers/kubernetes/index.js'
import { CONTRACT_POOL_ID, providerContract } from '../contract/provider-contract.js'
import { startFakeKubeApi, type FakeKubeApi } from '../helpers/fake-kube-api.js'
import { makeTemplate } from '../helpers/template.js'

let api: FakeKubeApi | undefined
const dir = mkdtempSync(join(tmpdir(), 'studiopool-k8s-contract-'))
after(async () => {
  await api?.stop()
  rmSync(dir, { recursive: true, force: true })
})

providerContract({
  name: 'kubernetes (fake API server at the wire level)',
  unknownRef: 'studiopool-aaaaaaaaaaaaaaaaaaaa-0/00000000-0000-0000-0000-000000000000',
  skip: {
    suspend: 'a pod cannot be stopped and started again; suspend is not offered (capabilities.supportsSuspend false)',
  },
  make: async () => {
    api = await startFakeKubeApi()
    const log = pino({ level: 'silent' })
    const provider = new KubernetesProvider({
      poolId: CONTRACT_POOL_ID,
      dataDir: '/nonexistent',
      settings: { kubeconfig: api.writeKubeconfig(dir), namespace: 'contract', retryBackoff: 50 },
      log,
    })
    await provider.init({ log })
    return {
      provider,
      template: makeTemplate({
        name: 'demo',
        provider: 'kubernetes',
        minFree: 0,
        port: 8888,
        settings: {
          image: 'quay.io/jupyter/base-notebook:2025-01-06',
          resources: { requests: { cpu: '250m', memory: '512Mi' } },
        },
      }),
      cleanup: async () => {
        await provider.close()
      },
    }
  },
})

it('the API server refused nothing the provider sent (every object valid against the Kubernetes 1.36 schema)', () => {
  assert.ok(api)
  assert.ok(
    api.accepted.some((o) => o.kind === 'Pod'),
    'pods were sent',
  )
  assert.ok(
    api.accepted.some((o) => o.kind === 'NetworkPolicy'),
    'the network policy was sent',
  )
  const writes = api.requests.filter((r) => r.method === 'POST' || r.method === 'PATCH')
  assert.ok(writes.length > 0)
  for (const w of writes) assert.ok(w.status < 300, `${w.method} ${w.resource} answered ${w.status}`)
})
