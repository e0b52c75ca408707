// CUDA side of the puzzle op: same semantics as puzzle_cpu.cpp, runtime API only.
//
// The slot table is resolved and checked on the host (resolve_slots, shared with the CPU path),
// copied to a stream-ordered device buffer, and read by a kernel where each warp copies one
// output row of cw elements: consecutive lanes touch consecutive addresses (descending ones for a
// reversed W axis), so loads and stores stay coalesced.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "puzzle/puzzle.h"
#include "utils/checks.h"

namespace rubikkit {
namespace puzzle {

namespace {

void throw_on_error(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("rubikkit puzzle (CUDA): ") + what + ": " +
                             cudaGetErrorString(err));
  }
}

// Restores the caller's current device on scope exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    throw_on_error(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) throw_on_error(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

struct Strides {
  int64_t s[5];
};

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // blockDim = (32, 8): one warp per output row

template <typename T>
__global__ void puzzle_kernel(const T* __restrict__ src, Strides st, const Slot* __restrict__ slots,
                              int64_t rows, int64_t M, int64_t C, int64_t cd, int64_t ch,
                              int64_t cw, T* __restrict__ dst) {
  const int64_t step = int64_t(gridDim.x) * kRowsPerBlock;
  for (int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.y; row < rows; row += step) {
    // row = ((s * C + c) * cd + z) * ch + y with s = b * M + m
    const int64_t y = row % ch;
    int64_t t = row / ch;
    const int64_t z = t % cd;
    t /= cd;
    const int64_t c = t % C;
    const int64_t s = t / C;
    const int64_t b = s / M;
    const Slot sl = slots[s];
    const int64_t zs = reverses_d(sl.rot) ? cd - 1 - z : z;
    const int64_t ys = reverses_h(sl.rot) ? ch - 1 - y : y;
    const bool rw = reverses_w(sl.rot);
    const T* in = src + b * st.s[0] + c * st.s[1] + (sl.d0 + zs) * st.s[2] +
                  (sl.h0 + ys) * st.s[3] + sl.w0 * st.s[4];
    T* out = dst + row * cw;
    for (int64_t x = threadIdx.x; x < cw; x += kWarp) {
      out[x] = in[(rw ? cw - 1 - x : x) * st.s[4]];
    }
  }
}

template <typename T>
void launch(const Geometry& g, const Slot* slots, const void* src, void* dst, cudaStream_t stream) {
  const int64_t rows = g.B * g.M * g.C * g.cd * g.ch;
  const int64_t max_blocks = int64_t(1) << 20;  // grid-stride loop beyond this
  int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > max_blocks) blocks = max_blocks;
  Strides st;
  for (int i = 0; i < 5; ++i) st.s[i] = g.stride[i];
  puzzle_kernel<T><<<static_cast<unsigned>(blocks), dim3(kWarp, kRowsPerBlock), 0, stream>>>(
      static_cast<const T*>(src), st, slots, rows, g.M, g.C, g.cd, g.ch, g.cw,
      static_cast<T*>(dst));
  throw_on_error(cudaGetLastError(), "kernel launch");
}

}  // namespace

void puzzle_cuda(const Geometry& g, const std::vector<Slot>& slots, const void* src, void* dst,
                 int device, std::uintptr_t stream_handle) {
  check_geometry(g);
  check_arg(static_cast<int64_t>(slots.size()) == g.B * g.M, "perms", "slot table has ",
            slots.size(), " entries, expected B * M = ", g.B * g.M);
  if (g.out_numel() == 0) return;  // nothing to launch (and no zero-sized grid)
  check_arg(src != nullptr, "volumes", "null device pointer");
  check_arg(dst != nullptr, "out", "null device pointer");
  check_arg(device >= 0, "device", "must be >= 0, got ", device);

  DeviceGuard guard(device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const size_t bytes = slots.size() * sizeof(Slot);
  // Stream-ordered allocation: the table lives exactly as long as the work that reads it,
  // without synchronising the caller's stream.
  Slot* d_slots = nullptr;
  throw_on_error(cudaMallocAsync(reinterpret_cast<void**>(&d_slots), bytes, stream),
                 "cudaMallocAsync");
  cudaError_t err = cudaMemcpyAsync(d_slots, slots.data(), bytes, cudaMemcpyHostToDevice, stream);
  if (err == cudaSuccess) {
    try {
      switch (g.itemsize) {
        case 1:
          launch<uint8_t>(g, d_slots, src, dst, stream);
          break;
        case 2:
          launch<uint16_t>(g, d_slots, src, dst, stream);
          break;
        case 4:
          launch<uint32_t>(g, d_slots, src, dst, stream);
          break;
        case 8:
          launch<uint64_t>(g, d_slots, src, dst, stream);
          break;
        default:
          check_itemsize(g.itemsize, "volumes");
      }
    } catch (...) {
      cudaFreeAsync(d_slots, stream);
      throw;
    }
  }
  cudaError_t free_err = cudaFreeAsync(d_slots, stream);
  throw_on_error(err, "cudaMemcpyAsync (slot table)");
  throw_on_error(free_err, "cudaFreeAsync");
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

}  // namespace puzzle
}  // namespace rubikkit
