// safetensors reader and writer (format: huggingface/safetensors README and safetensors/src/tensor.rs).
//
// Layout: bytes 0-7 hold N, a little-endian u64; the next N bytes are a UTF-8 JSON object
// (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`), possibly
// right-padded with spaces; the rest is one byte buffer that the tensors tile exactly, offsets
// relative to its start. The reader parses and validates only the header: model files are
// memory-mapped by the native engine later, which trusts the byte ranges validated here.
import { randomBytes } from 'node:crypto';
import { open, rename, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { ModelFormatError, describeValue } from './format-error.js';
import { jsonErrorOffset } from './json-file.js';

/** Bytes per element of every dtype we can lay out (sub-byte F4/F6 types are not supported). */
export const DTYPE_SIZES = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
} as const;

export type Dtype = keyof typeof DTYPE_SIZES;

/** The reference reader refuses headers above 100 MB; so do we (it bounds memory on hostile files). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorEntry {
  dtype: Dtype;
  shape: number[];
  /** Absolute file offset of the first byte. */
  begin: number;
  /** Absolute file offset one past the last byte. */
  end: number;
}

export interface SafetensorsHeader {
  path: string;
  fileSize: number;
  /** Absolute file offset of the byte buffer (8 + header length). */
  dataStart: number;
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

/** What readTensor returns for each dtype: 16-bit floats and fp8 come back as raw bit patterns. */
export type TensorData =
  | Float32Array | Float64Array | Uint16Array | Int16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array | Uint8Array | Int8Array;

export interface TensorToWrite {
  dtype: Dtype;
  shape: number[];
  /** Little-endian, row-major bytes; byteLength must equal product(shape) · itemsize. */
  data: ArrayBufferView;
}

function isDtype(value: unknown): value is Dtype {
  return typeof value === 'string' && Object.hasOwn(DTYPE_SIZES, value);
}

const DTYPE_LIST = Object.keys(DTYPE_SIZES).join(', ');

function assertLittleEndianHost(): void {
  // Both the format and our TypedArray views are little-endian; a big-endian host would need swaps.
  if (endianness() !== 'LE') throw new Error('sealkit: safetensors I/O needs a little-endian host');
}

/** Element count of a shape, or undefined if it is not a list of non-negative safe integers. */
function elementCount(shape: unknown): number | undefined {
  if (!Array.isArray(shape)) return undefined;
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) return undefined;
    n *= d;
    if (!Number.isSafeInteger(n)) return undefined;
  }
  return n;
}

/** Opens a regular file for reading. Checking first matters: opening a FIFO would block forever. */
async function openRegularFile(path: string): Promise<{ fh: FileHandle; size: number }> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    throw new ModelFormatError(path, undefined, `cannot read the file (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
  if (!info.isFile()) throw new ModelFormatError(path, undefined, 'expected a regular file');
  try {
    return { fh: await open(path, 'r'), size: info.size };
  } catch (err) {
    throw new ModelFormatError(path, undefined, `cannot open the file (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
}

/** Reads exactly `length` bytes at `position`; a short read means the file shrank under us. */
async function readExactly(fh: FileHandle, path: string, into: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < into.byteLength) {
    const { bytesRead } = await fh.read(into, done, into.byteLength - done, position + done);
    if (bytesRead === 0) {
      throw new ModelFormatError(path, undefined, `file ended at byte ${position + done} while reading ${into.byteLength} bytes from offset ${position} (was it truncated or modified?)`);
    }
    done += bytesRead;
  }
}

/**
 * Finds a key that occurs twice at the top level of a JSON object text. JSON.parse silently keeps
 * the last duplicate; the format forbids duplicates, so we look for them ourselves. The text has
 * already parsed, so a minimal scanner (strings, nesting) suffices.
 */
function duplicateTopLevelKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1;
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return undefined;
}

/**
 * Reads and validates the header of a safetensors file: only the 8-byte length and the JSON are
 * read, never the tensor data. Throws ModelFormatError naming the file, the tensor or field and
 * what was expected for anything the format does not allow.
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const { fh, size } = await openRegularFile(path);
  try {
    if (size < 8) {
      throw new ModelFormatError(path, undefined, `file is ${size} bytes, shorter than the 8-byte header length prefix (not a safetensors file, or truncated)`);
    }
    const prefix = new Uint8Array(8);
    await readExactly(fh, path, prefix, 0);
    const n64 = Buffer.from(prefix.buffer).readBigUInt64LE(0);
    if (n64 === 0n) throw new ModelFormatError(path, 'header length', 'is 0; expected a JSON header of at least 2 bytes');
    if (n64 > BigInt(MAX_HEADER_BYTES)) {
      throw new ModelFormatError(path, 'header length', `is ${n64} bytes; expected at most ${MAX_HEADER_BYTES} (not a safetensors file, or corrupt)`);
    }
    const headerLength = Number(n64);
    if (8 + headerLength > size) {
      throw new ModelFormatError(path, 'header length', `is ${headerLength} bytes but the file has only ${size - 8} bytes after the length prefix (truncated?)`);
    }
    const raw = new Uint8Array(headerLength);
    await readExactly(fh, path, raw, 8);
    return parseHeader(path, raw, size);
  } finally {
    await fh.close();
  }
}

function parseHeader(path: string, raw: Uint8Array, fileSize: number): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new ModelFormatError(path, 'header', 'is not valid UTF-8');
  }
  if (text[0] !== '{') {
    throw new ModelFormatError(path, 'header', `expected a JSON object starting with '{', found ${describeValue(text.slice(0, 16))}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    const offset = jsonErrorOffset(text);
    throw new ModelFormatError(path, 'header', `is not valid JSON at byte ${offset < 0 ? '?' : Buffer.byteLength(text.slice(0, offset))} of the header (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ModelFormatError(path, 'header', `expected a JSON object, found ${describeValue(json)}`);
  }
  const duplicate = duplicateTopLevelKey(text);
  if (duplicate !== undefined) throw new ModelFormatError(path, `tensor "${duplicate}"`, 'appears twice in the header; names must be unique');

  const dataStart = 8 + raw.byteLength;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};

  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(path, value);
      continue;
    }
    const where = `tensor "${name}"`;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new ModelFormatError(path, where, `expected an object {dtype, shape, data_offsets}, found ${describeValue(value)}`);
    }
    const entry = value as Record<string, unknown>;
    const { dtype, shape, data_offsets: offsets } = entry;
    if (dtype === undefined) throw new ModelFormatError(path, where, 'field "dtype" is missing');
    if (!isDtype(dtype)) throw new ModelFormatError(path, where, `field "dtype": expected one of ${DTYPE_LIST}, found ${describeValue(dtype)}`);
    if (shape === undefined) throw new ModelFormatError(path, where, 'field "shape" is missing');
    const count = elementCount(shape);
    if (count === undefined) {
      throw new ModelFormatError(path, where, `field "shape": expected a list of non-negative integers, found ${describeValue(shape)}`);
    }
    if (offsets === undefined) throw new ModelFormatError(path, where, 'field "data_offsets" is missing');
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new ModelFormatError(path, where, `field "data_offsets": expected [begin, end], two non-negative integers, found ${describeValue(offsets)}`);
    }
    const [b, e] = offsets as [number, number];
    if (b > e) throw new ModelFormatError(path, where, `field "data_offsets": expected begin <= end, found [${b}, ${e}]`);
    const itemsize = DTYPE_SIZES[dtype];
    const needed = count * itemsize;
    if (e - b !== needed) {
      throw new ModelFormatError(path, where, `data_offsets [${b}, ${e}] span ${e - b} bytes but shape ${describeValue(shape)} of ${dtype} needs ${needed}`);
    }
    if (e > dataSize) {
      throw new ModelFormatError(path, where, `data_offsets [${b}, ${e}] end beyond the data section of ${dataSize} bytes (file truncated?)`);
    }
    tensors.set(name, { dtype, shape: [...(shape as number[])], begin: dataStart + b, end: dataStart + e });
  }

  checkCoverage(path, tensors, dataStart, dataSize);
  return { path, fileSize, dataStart, tensors, metadata };
}

function parseMetadata(path: string, value: unknown): Record<string, string> {
  // serde reads `null` for the Option as "no metadata"; the reference reader accepts it, so do we.
  if (value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ModelFormatError(path, 'field "__metadata__"', `expected an object mapping strings to strings, found ${describeValue(value)}`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') {
      throw new ModelFormatError(path, `field "__metadata__"."${k}"`, `expected a string, found ${describeValue(v)}`);
    }
    out[k] = v;
  }
  return out;
}

/** The buffer must be tiled exactly: no overlaps, no holes, nothing after the last tensor. */
function checkCoverage(path: string, tensors: Map<string, TensorEntry>, dataStart: number, dataSize: number): void {
  // Sorting by (begin, end) puts empty tensors before a non-empty one at the same offset.
  const sorted = [...tensors].sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: string | undefined;
  for (const [name, t] of sorted) {
    const b = t.begin - dataStart;
    const e = t.end - dataStart;
    if (b < cursor) {
      throw new ModelFormatError(path, `tensor "${name}"`, `data_offsets [${b}, ${e}] overlap the previous tensor "${previous}" which ends at ${cursor}`);
    }
    if (b > cursor) {
      throw new ModelFormatError(path, `tensor "${name}"`, `data_offsets [${b}, ${e}] leave a hole: bytes [${cursor}, ${b}) of the data section belong to no tensor`);
    }
    cursor = e;
    previous = name;
  }
  if (cursor !== dataSize) {
    throw new ModelFormatError(path, 'data section', `is ${dataSize} bytes but the tensors cover only [0, ${cursor}); expected the tensors to fill it exactly (trailing garbage or a missing tensor)`);
  }
}

function viewFor(dtype: Dtype, buffer: ArrayBuffer): TensorData {
  switch (dtype) {
    case 'F32': return new Float32Array(buffer);
    case 'F64': return new Float64Array(buffer);
    case 'F16': case 'BF16': case 'U16': return new Uint16Array(buffer);
    case 'I16': return new Int16Array(buffer);
    case 'I32': return new Int32Array(buffer);
    case 'U32': return new Uint32Array(buffer);
    case 'I64': return new BigInt64Array(buffer);
    case 'U64': return new BigUint64Array(buffer);
    case 'I8': return new Int8Array(buffer);
    case 'BOOL': case 'U8': case 'F8_E5M2': case 'F8_E4M3': case 'F8_E8M0': return new Uint8Array(buffer);
  }
}

/**
 * Reads one tensor into a fresh, aligned TypedArray (F16/BF16 as raw Uint16 bit patterns). Meant
 * for small tensors (adapters, tests); model weights are memory-mapped by the native engine.
 */
export async function readTensor(header: SafetensorsHeader, name: string): Promise<TensorData> {
  assertLittleEndianHost();
  const entry = header.tensors.get(name);
  if (entry === undefined) {
    throw new ModelFormatError(header.path, `tensor "${name}"`, `not found; the file holds ${header.tensors.size} tensors`);
  }
  const buffer = new ArrayBuffer(entry.end - entry.begin);
  const { fh, size } = await openRegularFile(header.path);
  try {
    if (size !== header.fileSize) {
      throw new ModelFormatError(header.path, undefined, `file is now ${size} bytes but was ${header.fileSize} when its header was read (modified since?)`);
    }
    await readExactly(fh, header.path, new Uint8Array(buffer), entry.begin);
  } finally {
    await fh.close();
  }
  return viewFor(entry.dtype, buffer);
}

/** FileHandle.write may write less than asked (large buffers); loop until all of it is out. */
async function writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.byteLength - done);
    done += bytesWritten;
  }
}

/**
 * Writes a spec-conformant safetensors file: header JSON padded with spaces so the data starts on
 * an 8-byte boundary, tensors ordered like the reference writer (larger dtypes first, then by name,
 * which keeps every tensor naturally aligned), one dense buffer. The file is written beside the
 * target and renamed over it, so a reader never sees a half-written file.
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  assertLittleEndianHost();
  const entries = Object.entries(tensors);
  for (const [name, t] of entries) {
    const where = `tensor "${name}"`;
    if (name === '__metadata__') throw new ModelFormatError(path, where, 'is a reserved name');
    if (!isDtype(t.dtype)) throw new ModelFormatError(path, where, `dtype: expected one of ${DTYPE_LIST}, found ${describeValue(t.dtype)}`);
    const count = elementCount(t.shape);
    if (count === undefined) throw new ModelFormatError(path, where, `shape: expected a list of non-negative integers, found ${describeValue(t.shape)}`);
    const needed = count * DTYPE_SIZES[t.dtype];
    if (t.data.byteLength !== needed) {
      throw new ModelFormatError(path, where, `data has ${t.data.byteLength} bytes but shape ${describeValue(t.shape)} of ${t.dtype} needs ${needed}`);
    }
  }
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new ModelFormatError(path, `metadata "${k}"`, `expected a string, found ${describeValue(v)}`);
    }
  }
  entries.sort(([an, a], [bn, b]) => DTYPE_SIZES[b.dtype] - DTYPE_SIZES[a.dtype] || (an < bn ? -1 : an > bn ? 1 : 0));

  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);

  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx');
  try {
    try {
      await writeAll(fh, head);
      for (const [, t] of entries) await writeAll(fh, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}
