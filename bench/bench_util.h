// Small helpers the benchmark programs with their own main() share:
// comma-separated flag values and the machine's load, which every figure is
// reported with. Header-only; not a library.
#ifndef ESCDR_BENCH_BENCH_UTIL_H_
#define ESCDR_BENCH_BENCH_UTIL_H_

#include <cstdlib>
#include <string>
#include <vector>

#include "escdr/sys/unique_fd.h"

namespace escdr::bench {

// "a,b,,c" -> {"a", "b", "c"} (empty items dropped).
inline std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// The 1-minute load average (/proc/loadavg), 0 if unreadable.
inline double LoadAverage1() {
  return std::strtod(ReadFileToString("/proc/loadavg").value_or("0").c_str(), nullptr);
}

}  // namespace escdr::bench

#endif  // ESCDR_BENCH_BENCH_UTIL_H_
