// The GPUs the CUDA backend can see (for `seal info`). Only built with SEALKIT_WITH_CUDA.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sealkit {

struct GpuInfo {
  int index = 0;
  std::string name;
  uint64_t memory_bytes = 0;
  int major = 0, minor = 0;
};

// Fills `out`; returns an empty string, or why no GPU can be listed (no driver, no device).
std::string list_gpus(std::vector<GpuInfo>& out);

}  // namespace sealkit
