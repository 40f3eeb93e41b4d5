/**
 * A pod, its latest event, as the pool sees an instance: state, address, and the reason in words —
 * launch progress while pending (the scheduler waiting for the autoscaler's node, an image pull),
 * why it was lost once it is (evicted, OOMKilled, node lost, failed).
 */
import { LABEL_INSTANCE, LABEL_TEMPLATE, type ProviderInstance } from '../provider.js'
import type { V1Event, V1Pod } from './kubernetes-client.js'
import { K8S_ANNOTATION_PORT, studiopoolLabels } from './kubernetes-labels.js'
import { APP_CONTAINER } from './kubernetes-pod.js'

/** A pod's ref: its name and uid. The uid changes when a pod of the same name is made again. */
export function podRef(pod: V1Pod): string {
  return `${pod.metadata?.name ?? ''}/${pod.metadata?.uid ?? ''}`
}

export function parseRef(ref: string): { name: string; uid: string } | null {
  const m = /^(studiopool-[a-z2-7]{20}-\d{1,6})\/([0-9a-f-]{1,64})$/.exec(ref)
  return m ? { name: m[1]!, uid: m[2]! } : null
}

/** The events that are launch progress or a reason, in words. */
function eventNote(e: V1Event | undefined): { message: string; progress: number } | null {
  if (!e) return null
  const msg = (e.message ?? '').slice(0, 500)
  switch (e.reason) {
    case 'TriggeredScaleUp':
      return { message: `the cluster autoscaler is adding a node: ${msg}`, progress: 10 }
    case 'NotTriggerScaleUp':
      return { message: `no node fits and the autoscaler cannot add one: ${msg}`, progress: 5 }
    case 'FailedScheduling':
      return { message: `waiting for a node: ${msg}`, progress: 5 }
    case 'Scheduled':
      return { message: 'scheduled on a node', progress: 20 }
    case 'Pulling':
      return { message: `pulling the image: ${msg}`, progress: 40 }
    case 'Pulled':
      return { message: `image pulled: ${msg}`, progress: 70 }
    case 'Failed':
    case 'BackOff':
    case 'FailedMount':
    case 'FailedAttachVolume':
      return { message: `${e.reason}: ${msg}`, progress: 30 }
    default:
      return null
  }
}

/** Why a pod that ended did, in words; null when it has not ended. */
export function lostReason(pod: V1Pod): string | null {
  const st = pod.status
  const app = st?.containerStatuses?.find((c) => c.name === APP_CONTAINER) ?? st?.containerStatuses?.[0]
  const term = app?.state?.terminated
  if (pod.metadata?.deletionTimestamp) return 'the pod is being deleted'
  if (st?.reason === 'Evicted') return `the pod was evicted: ${st.message ?? 'node pressure'}`
  if (st?.reason === 'NodeLost' || st?.conditions?.some((c) => c.type === 'Ready' && c.reason === 'NodeLost'))
    return `the pod's node was lost: ${st?.message ?? 'the node does not answer'}`
  if (st?.phase === 'Unknown') return "the pod's node does not report it (phase Unknown)"
  if (st?.conditions?.some((c) => c.type === 'DisruptionTarget' && c.status === 'True') && st.phase === 'Failed')
    return `the pod was disrupted: ${st.conditions.find((c) => c.type === 'DisruptionTarget')?.reason ?? ''}`
  if (term?.reason === 'OOMKilled') return 'the app ran out of memory and was killed (OOMKilled)'
  if (st?.phase === 'Failed')
    return `the pod failed: ${term?.reason ?? st.reason ?? 'Error'}${term ? ` (exit code ${term.exitCode})` : ''}${st.message ? `: ${st.message}` : ''}`
  if (st?.phase === 'Succeeded') return `the app exited (exit code ${term?.exitCode ?? 0})`
  return null
}

/** Ended before it ever ran its app: a start that failed (the pool fails it) rather than a session lost. */
function failedAtStart(pod: V1Pod): boolean {
  const st = pod.status
  if (st?.phase !== 'Failed' || st.reason === 'Evicted') return false
  const term = st.containerStatuses?.[0]?.state?.terminated
  if (term?.reason === 'OOMKilled') return false
  return ['Error', 'ContainerCannotRun', 'StartError', 'CreateContainerError'].includes(term?.reason ?? '')
}

function pendingNote(pod: V1Pod, last: V1Event | undefined): { message: string; progress: number } {
  const waiting = pod.status?.containerStatuses?.find((c) => c.state?.waiting)?.state?.waiting
  if (waiting?.reason && waiting.reason !== 'ContainerCreating')
    return { message: `${waiting.reason}: ${(waiting.message ?? '').slice(0, 500)}`, progress: 30 }
  const fromEvent = eventNote(last)
  if (fromEvent) return fromEvent
  const sched = pod.status?.conditions?.find((c) => c.type === 'PodScheduled')
  if (sched?.status === 'False')
    return { message: `waiting for a node: ${sched.message ?? sched.reason ?? ''}`, progress: 5 }
  if (waiting?.reason === 'ContainerCreating') return { message: 'creating the container', progress: 60 }
  return { message: pod.spec?.nodeName ? 'starting on a node' : 'waiting for the scheduler', progress: 5 }
}

export function podInstance(pod: V1Pod, last: V1Event | undefined): ProviderInstance {
  const labels = studiopoolLabels(pod.metadata ?? {})
  const port =
    Number(pod.metadata?.annotations?.[K8S_ANNOTATION_PORT]) || pod.spec?.containers?.[0]?.ports?.[0]?.containerPort
  const base = {
    ref: podRef(pod),
    instanceId: labels[LABEL_INSTANCE] ?? '',
    template: labels[LABEL_TEMPLATE] ?? '',
    labels,
    createdAt: pod.metadata?.creationTimestamp ? new Date(pod.metadata.creationTimestamp).getTime() : null,
  }
  const lost = lostReason(pod)
  if (lost)
    return {
      ...base,
      state: 'terminated',
      address: null,
      message: lost,
      ...(failedAtStart(pod) ? { endReason: 'failed' as const } : {}),
    }
  if (pod.status?.phase === 'Running' && pod.status.podIP) {
    const ready = pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
    return {
      ...base,
      state: 'running',
      address: `http://${pod.status.podIP.includes(':') ? `[${pod.status.podIP}]` : pod.status.podIP}:${port}`,
      progress: ready ? 90 : 80,
      message: ready ? 'the pod runs' : 'the container runs, the app is starting',
    }
  }
  const note = pendingNote(pod, last)
  return { ...base, state: 'pending', address: null, ...note }
}
