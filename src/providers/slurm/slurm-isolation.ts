import type { IsolationReport } from '../provider.js'
import type { SlurmProviderSettings } from './slurm-config.js'

/** What the slurm provider isolates (architecture.md contract 5; docs/slurm.md, Isolation). */
export function isolationOf(s: SlurmProviderSettings): IsolationReport {
  const notes = [
    s.runAs === 'none'
      ? "sessions run as the server's own account on the compute nodes"
      : "each session's job runs as its user's own account: Unix permissions on the compute node (and the cluster's own cgroup/task plugins) separate it from other users' sessions and from the server",
    'sessions can reach every address the compute node can, this machine included; the gateway must reach the compute node at the reported host and port',
  ]
  return {
    isolated: s.runAs !== 'none',
    // A compute node may be this very machine (a single-node cluster): assume the worst.
    sessionsReachLoopback: !s.submitHost,
    sessionNetworks: [],
    notes,
  }
}
