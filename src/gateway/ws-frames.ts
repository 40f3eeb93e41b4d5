import { randomBytes } from 'node:crypto'

/**
 * RFC 6455 framing on one direction of a WebSocket byte stream, headers only: payloads are
 * skipped, never copied or unmasked. One tracker per direction knows where frames begin and end
 * (so a close frame can be put between two frames, never inside one), and, on the client→upstream
 * direction, calls `onDataFrame` at the start of every data frame (text, binary or continuation;
 * not close, ping or pong), which is what the gateway counts as activity.
 *
 * The hot path is a frame header that lies whole inside one chunk (every small message): it is
 * read in place from the chunk. Only a header split across chunks is collected in a 14-byte buffer
 * that belongs to the tracker. No allocation per chunk or per frame.
 */
export class WsFrameBoundary {
  #skip = 0
  readonly #hdr = Buffer.alloc(14)
  #hdrLen = 0
  readonly #onDataFrame: (() => void) | null

  constructor(onDataFrame?: () => void) {
    this.#onDataFrame = onDataFrame ?? null
  }

  /** Between two frames: the next byte would start a new frame. */
  get atBoundary(): boolean {
    return this.#skip === 0 && this.#hdrLen === 0
  }

  /**
   * Follows `buf` and returns how many of its bytes were consumed: all of them, or with
   * `stopAtBoundary`, only those up to the first frame boundary (0 when already at one).
   */
  advance(buf: Buffer, stopAtBoundary: boolean): number {
    const n = buf.length
    if (stopAtBoundary && this.atBoundary) return 0
    let i = 0
    while (i < n) {
      if (this.#skip > 0) {
        const left = n - i
        if (this.#skip >= left) {
          this.#skip -= left
          return n
        }
        i += this.#skip
        this.#skip = 0
        if (stopAtBoundary) return i
        continue
      }
      let len: number
      if (this.#hdrLen === 0 && n - i >= 2 && n - i >= headerLength(buf[i + 1]!)) {
        // The whole header is in this chunk: read it where it is.
        len = payloadLength(buf, i)
        if (this.#onDataFrame !== null && (buf[i]! & 0x0f) < 8) this.#onDataFrame()
        i += headerLength(buf[i + 1]!)
      } else {
        // A header split across chunks: collect its bytes until it is whole.
        const h = this.#hdr
        while (i < n && (this.#hdrLen < 2 || this.#hdrLen < headerLength(h[1]!))) h[this.#hdrLen++] = buf[i++]!
        if (this.#hdrLen < 2 || this.#hdrLen < headerLength(h[1]!)) return i
        len = payloadLength(h, 0)
        this.#hdrLen = 0
        if (this.#onDataFrame !== null && (h[0]! & 0x0f) < 8) this.#onDataFrame()
      }
      this.#skip = len
      if (stopAtBoundary && len === 0) return i
    }
    return i
  }
}

/**
 * Calls `onData` at the start of every client→server data frame (opcode 0x0–0x7): a
 * `WsFrameBoundary` that only counts. The gateway uses one tracker per direction for both jobs.
 */
export class WsFrameScanner {
  readonly #frames: WsFrameBoundary

  constructor(onData: () => void) {
    this.#frames = new WsFrameBoundary(onData)
  }

  feed(buf: Buffer): void {
    this.#frames.advance(buf, false)
  }
}

/** A close frame with `code`; masked (with a random key) when we speak as the client, to upstream. */
export function wsCloseFrame(code: number, masked: boolean): Buffer {
  const payload = Buffer.from([code >> 8, code & 0xff])
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload])
  const mask = randomBytes(4)
  for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4]!
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload])
}

/** A frame header's length from its second byte: 2, plus the extended length (2 or 8), plus the mask (4). */
function headerLength(b1: number): number {
  const len7 = b1 & 0x7f
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0)
}

/** The payload length of the (whole) header at `at`. */
function payloadLength(b: Buffer, at: number): number {
  const len7 = b[at + 1]! & 0x7f
  if (len7 === 126) return (b[at + 2]! << 8) | b[at + 3]!
  if (len7 === 127) return b.readUInt32BE(at + 2) * 2 ** 32 + b.readUInt32BE(at + 6)
  return len7
}
