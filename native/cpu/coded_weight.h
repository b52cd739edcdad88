// A bf16 weight coded losslessly in 12 bits per element, for decoding's one-row GEMMs (y = x W^T).
//
// Decoding one sequence streams every weight from memory once per token, so its speed is the bytes
// it reads over the memory bandwidth. A bf16 value's high byte (sign and the exponent's top seven
// bits) takes few values across a weight matrix: an initialised or trained matrix's magnitudes span a
// few powers of two. So each element keeps its low byte (the exponent's last bit and the 7 mantissa
// bits) as it is, and its high byte becomes a 4-bit code: codes 0-14 name the matrix's 15 most common
// high bytes (its table), code 15 says the high byte is on the row's escape list. The GEMM rebuilds
// the exact bf16 values in registers (two byte permutes per 64 elements) and multiplies them as the
// bf16 rows path does, so the products, their order and the bits are those of W's own rows; only the
// bytes read drop to 3/4. The idea is lossless entropy coding of bf16 exponents, as DFloat11 (Zhang et
// al. 2025) does with Huffman codes on GPUs; here a fixed-width code keeps the decoding a few
// instructions.
//
// Layout: row r of W [N, K] is ceil(K / 64) groups of 96 bytes, `row_bytes` apart. Group g holds
// elements [64 g, 64 g + 64): 64 low bytes in order, then 32 code bytes, byte i carrying element
// 64 g + i's code in its low nibble and element 64 g + 32 + i's in its high nibble. Elements past K
// are zero bytes (code 0) and the kernel masks them. Escaped high bytes are listed per row in element
// order, per segment: segment s of row r's are escapes[escape_start[r segments + s] .. the next).
// Batched decoding (2-16 rows) reads W's packed strips instead; their words are coded the same way,
// a strip as a row.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "../core/dtype.h"

namespace sealkit::cpu {

struct CodedWeight {
  const void* source = nullptr;  // the bf16 W it was coded from (matched by address, like PackedWeight)
  int64_t N = 0, K = 0, ldb = 0;
  // What is coded: W's rows (one-row GEMMs), or W's vdpbf16ps packed strips (strips: 2-16 rows;
  // each strip's run of bf16 words coded as a row, a pair step's 64 words being one group).
  bool strips = false;
  int64_t row_bytes = 0;  // bytes per coded row or strip
  // Escape offsets per segment of `segment_groups` groups of a row or strip (rows: the whole row;
  // strips: one K block of the packed GEMM), so a kernel can start at any segment.
  int64_t segments = 1, segment_groups = 0;
  // The high byte of code c at every index c + 16 j, so a 64-entry byte permute (vpermb, which reads
  // an index's low 6 bits) needs no masking of the nibble's neighbours. Code 15's entry is unused.
  alignas(64) uint8_t table[64] = {};
  uint8_t* data = nullptr;  // N x row_bytes, 64-byte aligned, owned
  std::vector<uint32_t> escape_start;  // rows (or strips) x segments + 1 offsets into escapes
  std::vector<uint8_t> escapes;
  // Rows only (empty for strips): which groups of each row hold an escaped element, bit g % 64 of
  // word escape_groups[r * escape_group_words + g / 64]. The one-row kernel tests a group's bit, so
  // only the ~1 % of groups that hold an escape compare their 64 codes with code 15 (the strips'
  // kernel, batch 2-16, compares every group of a block with escapes: there it measured level).
  int64_t escape_group_words = 0;
  std::vector<uint64_t> escape_groups;
  size_t bytes = 0;  // memory it holds
  CodedWeight() = default;
  CodedWeight(const CodedWeight&) = delete;
  CodedWeight& operator=(const CodedWeight&) = delete;
  ~CodedWeight();
};

constexpr int64_t kCodedGroup = 64;        // elements per group
constexpr int64_t kCodedGroupBytes = 96;   // 64 low bytes + 32 code bytes
constexpr int kCodedEscape = 15;
// A matrix with more escaped elements than 1 in this many is not coded: every group holding one takes
// a slow path, and the bytes saved shrink.
constexpr int64_t kCodedMaxEscapeRatio = 1024;

// Whether this CPU runs the coded kernel: the bf16-pair kernels are active (AVX512-BF16) and it has
// AVX512-VBMI (the byte permutes).
bool coded_weights_supported();
// Whether a model whose bf16 weights that decoding streams total `weight_bytes` should code them for
// one-row GEMMs: supported, and SEALKIT_CODED_WEIGHTS (unset: when they are over twice the
// last-level cache, so that decoding reads them from memory; in cache the decoding costs more than
// the bytes it saves: 0.8x on a 2 MB weight, Zen 5).
bool coded_weights_wanted(size_t weight_bytes);
// Whether the one-row GEMMs read a coded copy where they are given one (SEALKIT_CODED_WEIGHTS not
// "0", read per call, for tests and in-process A/B timings).
bool coded_weights_on();

// W [rows, cols] bf16 coded as above (its rows are y = x W^T's columns), or null where the CPU lacks
// the kernel, W is not bf16, or it has too many escapes. Parallel over the pool.
std::unique_ptr<CodedWeight> code_weight(WeightView w, int64_t rows, int64_t cols);
// W's packed vdpbf16ps strips (pack_weight for y = x W^T, not AMX's) coded as above, with escape
// offsets at every K block the strips' GEMM runs (packed_strip_kc_depth), or null.
struct PackedWeight;
std::unique_ptr<CodedWeight> code_packed_strips(const PackedWeight& pw);

}  // namespace sealkit::cpu
