#include "mapped_file.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace sealkit {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw std::runtime_error(path + ": cannot stat: " + std::strerror(e));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data_ == MAP_FAILED) {
      int e = errno;
      data_ = nullptr;
      ::close(fd);
      throw std::runtime_error(path + ": cannot map: " + std::strerror(e));
    }
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

const uint8_t* MappedFile::range(uint64_t begin, uint64_t end) const {
  if (begin > end || end > size_)
    throw std::runtime_error(path_ + ": byte range [" + std::to_string(begin) + ", " + std::to_string(end) +
                             ") is outside the file (" + std::to_string(size_) + " bytes)");
  return static_cast<const uint8_t*>(data_) + begin;
}

}  // namespace sealkit
