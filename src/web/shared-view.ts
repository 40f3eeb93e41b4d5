import type { SharedStatus } from '../pool/pool-service.js'
import { esc } from './html.js'

/** The admin view's "Shared pools" section (issue 14): per shared template, its size, queue, scale events and instances. */
export function sharedPoolsBlock(shared: readonly SharedStatus[]): string {
  if (!shared.length) return ''
  const blocks = shared.map((s) => {
    const rows = s.instances
      .map(
        (i) =>
          `<tr><td class="mono">${esc(i.id)}</td><td><span class="state state-${esc(i.state)}">${esc(i.state)}</span>` +
          `${i.draining ? ' <span class="tag">draining</span>' : ''}</td>` +
          `<td class="num">${i.connections}</td><td class="num">${i.requests}</td></tr>`,
      )
      .join('')
    const e = s.events
    return (
      `<h3>${esc(s.template)} <span class="tag">${esc(s.routing)}</span></h3>` +
      `<p>Instances ${s.instances.filter((i) => i.state !== 'stopping').length} (wanted ${s.desired}, ` +
      `bounds ${s.minInstances}–${s.maxInstances}); waiting ${s.waiting}; queue ${s.queued}` +
      `${s.maxQueueWaitMs ? `, longest wait ${Math.round(s.maxQueueWaitMs)} ms` : ''}. ` +
      `Scale events: ${e.started} started, ${e.drained} drained, ${e.ended} ended, ${e.recycled} recycled.</p>` +
      (rows
        ? `<table><thead><tr><th scope="col">Instance</th><th scope="col">State</th><th scope="col" class="num">Connections</th>` +
          `<th scope="col" class="num">Requests</th></tr></thead><tbody>${rows}</tbody></table>`
        : '<p>No instance runs.</p>')
    )
  })
  return `<section aria-labelledby="h-shared"><h2 id="h-shared">Shared pools</h2>${blocks.join('')}</section>`
}
