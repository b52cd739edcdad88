// Kernel and engine switches read from the environment on every call, so one process can time or
// test a path with and without them (seal bench --ab-env, bench/ab.ts): a switch is on unless its
// variable is exactly "0" (or, for switch_on_or, unless the machine's default says off).
#pragma once
#include <cstdlib>
#include <cstring>

namespace sealkit {

// Whether a switch's value `v` (null when unset) leaves it on, for callers that read the value once
// to parse more than on/off.
inline bool switch_value_on(const char* v) { return !(v && std::strcmp(v, "0") == 0); }

inline bool switch_on(const char* name) { return switch_value_on(std::getenv(name)); }

// A switch whose default depends on the machine: unset (or empty) takes `fallback`, "0" is off,
// anything else on.
inline bool switch_on_or(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return std::strcmp(v, "0") != 0;
}

}  // namespace sealkit
