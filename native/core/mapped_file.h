// A read-only memory mapping of a whole file (weights are read straight from the page cache).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace sealkit {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws std::runtime_error naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  size_t size() const { return size_; }
  // Bytes [begin, end) of the file; throws when the range is outside the file.
  const uint8_t* range(uint64_t begin, uint64_t end) const;

 private:
  std::string path_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace sealkit
