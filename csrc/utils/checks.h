// Argument checks shared by the rubikkit kernels.
//
// Python validates first; these checks run again in C++ so that a bad direct call of
// rubikkit._C raises instead of reading or writing out of bounds. Every message starts with the
// name of the argument ("origins: ..."), like the Python layer. std::invalid_argument becomes a
// Python ValueError through pybind11; no pybind11 header is needed here, so the CUDA sources can
// include this file too.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace rubikkit {

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, T&& first, Rest&&... rest) {
  os << std::forward<T>(first);
  append(os, std::forward<Rest>(rest)...);
}
}  // namespace detail

// "<arg>: <message parts...>", the form of every argument error.
template <typename... Parts>
std::string arg_message(const char* arg, Parts&&... parts) {
  std::ostringstream os;
  os << arg << ": ";
  detail::append(os, std::forward<Parts>(parts)...);
  return os.str();
}

// Throws std::invalid_argument("<arg>: <message parts...>") unless cond holds.
template <typename... Parts>
inline void check_arg(bool cond, const char* arg, Parts&&... parts) {
  if (cond) return;
  throw std::invalid_argument(arg_message(arg, std::forward<Parts>(parts)...));
}

// Throws std::invalid_argument(message) when a non-throwing check returned one.
inline void raise_if(const std::string& message) {
  if (!message.empty()) throw std::invalid_argument(message);
}

// Item sizes the copy kernels are instantiated for.
inline void check_itemsize(int64_t itemsize, const char* arg) {
  check_arg(itemsize == 1 || itemsize == 2 || itemsize == 4 || itemsize == 8, arg,
            "unsupported item size ", itemsize, " bytes (supported: 1, 2, 4, 8)");
}

inline void check_nonnegative(int64_t value, const char* arg, const char* what) {
  check_arg(value >= 0, arg, what, " must be >= 0, got ", value);
}

}  // namespace rubikkit
