import { errLine, sh } from './local-host.js'

/**
 * The nftables table of one pool (`inet studiopool_<tag>`): sessions may answer the gateway,
 * never open a connection to the host or forward a packet.
 */

export function firewallTable(tag: string): string {
  return `studiopool_${tag}`
}

function nftRules(tag: string): string {
  const ifs = `sp${tag}v*`
  return [
    `table inet ${firewallTable(tag)} {`,
    `  chain input {`,
    `    type filter hook input priority -10; policy accept;`,
    `    iifname "${ifs}" ct state established,related accept`,
    `    iifname "${ifs}" drop`,
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority -10; policy accept;`,
    `    iifname "${ifs}" drop`,
    `    oifname "${ifs}" drop`,
    `  }`,
    `}`,
    '',
  ].join('\n')
}

/** Loads (or reloads) the pool's table; null when it is in place, else why not. */
export async function loadFirewall(nft: string, tag: string): Promise<string | null> {
  try {
    // `add` then `flush` then the rules: idempotent across restarts, one atomic transaction.
    const table = `inet ${firewallTable(tag)}`
    await sh(nft, ['-f', '-'], `add table ${table}\nflush table ${table}\n${nftRules(tag)}`)
    return null
  } catch (err) {
    return errLine(err)
  }
}
