#include "buffer_pool.h"

namespace sealkit {

size_t BufferPool::give(Backend& backend, void* p, size_t bytes) {
  if (!p) return 0;
  live_ -= bytes;
  if (live_ + kept_bytes_ + bytes <= peak_) {
    kept_[bytes].push_back(p);
    kept_bytes_ += bytes;
    return 0;
  }
  backend.release(p);
  return bytes;
}

size_t BufferPool::clear(Backend& backend) {
  size_t released = 0;
  for (auto& [bytes, buffers] : kept_) {
    for (void* p : buffers) backend.release(p);
    released += bytes * buffers.size();
  }
  kept_.clear();
  kept_bytes_ = 0;
  return released;
}

}  // namespace sealkit
