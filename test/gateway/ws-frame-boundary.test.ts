/**
 * WsFrameBoundary and wsCloseFrame (issue 9 item 9): on shutdown the gateway puts a close frame
 * between two frames of each direction, never inside one. Checked against frames built here of
 * every length form (7-bit, 16-bit, 64-bit), masked and not, fed in every split.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { WsFrameBoundary, wsCloseFrame } from '../../src/gateway/forward.js'

// ws's own frame parser (not in its type definitions), as an independent judge of our close frame.
const { Receiver } = createRequire(import.meta.url)('ws') as {
  Receiver: new (o: { isServer: boolean }) => NodeJS.WritableStream & { on(e: string, f: (...a: any[]) => void): void }
}

function frame(len: number, masked: boolean, opcode = 0x2): Buffer {
  const head =
    len < 126
      ? Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | len])
      : len < 65536
        ? Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | 126, len >> 8, len & 0xff])
        : Buffer.concat([
            Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | 127]),
            (() => {
              const b = Buffer.alloc(8)
              b.writeBigUInt64BE(BigInt(len))
              return b
            })(),
          ])
  return Buffer.concat([head, masked ? randomBytes(4) : Buffer.alloc(0), randomBytes(len)])
}

test('advance() finds every frame end, whatever the chunking', () => {
  for (const masked of [false, true]) {
    const frames = [
      frame(0, masked),
      frame(5, masked),
      frame(125, masked),
      frame(126, masked),
      frame(1000, masked),
      frame(70_000, masked),
      frame(1, masked, 0x9),
    ]
    const stream = Buffer.concat(frames)
    const ends = new Set<number>()
    let at = 0
    for (const f of frames) ends.add((at += f.length))
    for (const chunk of [1, 2, 3, 7, 13, 4096, stream.length]) {
      const b = new WsFrameBoundary()
      // Feeding with stopAtBoundary from each boundary finds exactly the next boundary.
      let pos = 0
      const found: number[] = []
      while (pos < stream.length) {
        const end = Math.min(stream.length, pos + chunk)
        const n = b.advance(stream.subarray(pos, end), false)
        assert.equal(n, end - pos)
        pos = end
        if (b.atBoundary) found.push(pos)
      }
      for (const f of found) assert.ok(ends.has(f), `chunk ${chunk}: ${f} is not a frame end`)
      assert.ok(found.includes(stream.length))
      if (chunk === 1)
        assert.deepEqual(
          found,
          [...ends].filter((e) => e > 0),
          'byte by byte, every boundary is seen',
        )
    }
    // stopAtBoundary: from mid-frame, consumes exactly to the end of the current frame.
    const b = new WsFrameBoundary()
    assert.equal(b.advance(stream.subarray(0, frames[0]!.length + 3), false), frames[0]!.length + 3)
    assert.equal(b.atBoundary, false)
    const rest = stream.subarray(frames[0]!.length + 3)
    assert.equal(b.advance(rest, true), frames[1]!.length - 3)
    assert.equal(b.atBoundary, true)
    assert.equal(b.advance(rest.subarray(frames[1]!.length - 3), true), 0, 'already at a boundary: nothing consumed')
  }
})

test('wsCloseFrame: a valid close frame with code 1001, masked towards upstream', async () => {
  for (const masked of [false, true]) {
    const code = await new Promise<number>((resolve, reject) => {
      // ws's own parser: isServer=true expects masked (client) frames, false unmasked.
      const r = new Receiver({ isServer: masked })
      r.on('conclude', (c: number) => resolve(c))
      r.on('error', reject)
      r.write(wsCloseFrame(1001, masked))
    })
    assert.equal(code, 1001)
  }
})
