// Kernel and engine switches read from the environment on every call, so one process can time or
// test a path with and without them (seal bench --ab-env, bench/ab.ts): a switch is on unless its
// variable is exactly "0".
#pragma once
#include <cstdlib>
#include <cstring>

namespace sealkit {

inline bool switch_on(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::strcmp(v, "0") == 0);
}

}  // namespace sealkit
