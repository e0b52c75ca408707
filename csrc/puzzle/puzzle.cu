// CUDA side of the puzzle op: same semantics as puzzle_cpu.cpp, runtime API only.
//
// The slot table is resolved and checked on the host (resolve_slots, shared with the CPU path)
// and travels to the GPU inside the kernel's parameters, in chunks of up to kLargeChunk slots
// per launch (one launch for any usual batch). So a call allocates nothing on the device and
// makes no host-to-device copy: a copy from pageable host memory may wait for the work already
// queued on the stream, which would stall a training loop that queues its next step meanwhile.
// A warp copies one output row of cw elements, or 32 / cw rows side by side when cw < 32:
// consecutive lanes touch consecutive addresses (descending ones for a reversed W axis), so
// loads and stores stay coalesced, and the lanes of a row read the same slot.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "puzzle/puzzle.h"
#include "puzzle/puzzle_grid.h"
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

// Kernel parameters above 4 KB need CUDA 12.1 (and Volta or newer: every target here).
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12010
constexpr int64_t kLargeChunk = 960;  // 30 KB of slots, within the 32,764 bytes of parameters
#else
constexpr int64_t kLargeChunk = 112;  // 3.5 KB, within the 4,096 bytes of parameters
#endif
constexpr int64_t kSmallChunk = 64;  // 2 KB: a batch of 8 with 8 cubes, without the large copy

#if defined(__CUDACC_VER_MAJOR__) && \
    (__CUDACC_VER_MAJOR__ > 11 || (__CUDACC_VER_MAJOR__ == 11 && __CUDACC_VER_MINOR__ >= 7))
#define RUBIKKIT_GRID_CONSTANT __grid_constant__
#else
#define RUBIKKIT_GRID_CONSTANT
#endif

// A chunk of the slot table, passed by value. __grid_constant__ lets the kernel index it in place
// (without it a dynamically indexed parameter array is copied to each thread's local memory).
template <int64_t N>
struct SlotChunk {
  Slot s[N];
};

// The kernel's thread body is copy_thread_rows (puzzle_grid.h), shared with the host run of the
// grid that tests it without a GPU. chunk.s is indexed in place (__grid_constant__).
template <typename T, int64_t N, typename I>
__global__ void puzzle_kernel(const T* __restrict__ src, Strides st,
                              const RUBIKKIT_GRID_CONSTANT SlotChunk<N> chunk, I first, I rows, I M,
                              I C, I cd, I ch, I cw, RowMap map, T* __restrict__ dst) {
  copy_thread_rows<T, I>(src, st, chunk.s, first, rows, M, C, cd, ch, cw, map, dst, threadIdx.x,
                         threadIdx.y, blockIdx.x, gridDim.x);
}

// Launches over the slots in chunks of N; the last chunk may be partial.
template <typename T, int64_t N>
void launch_chunks(const Geometry& g, const std::vector<Slot>& slots, const T* src, T* dst,
                   cudaStream_t stream) {
  // RUBIKKIT_PUZZLE_WIDE_INDEX=1 takes the 64-bit path for any size: the tests' way to run it
  // without a 4-billion-row output.
  const char* flag = std::getenv("RUBIKKIT_PUZZLE_WIDE_INDEX");
  const bool wide = flag != nullptr && flag[0] == '1';
  const Strides st = strides_of(g);
  SlotChunk<N> chunk{};
  const int64_t total = static_cast<int64_t>(slots.size());
  for_each_launch(g, total, N, wide, kMaxBlocks, [&](const ChunkPlan& p) {
    std::copy(slots.begin() + p.first, slots.begin() + p.first + p.count, chunk.s);
    T* chunk_dst = dst + p.out_offset;
    const dim3 grid(static_cast<unsigned>(p.blocks)), block(kWarp, kWarpsPerBlock);
    if (p.narrow) {
      puzzle_kernel<T, N, uint32_t><<<grid, block, 0, stream>>>(
          src, st, chunk, uint32_t(p.first), uint32_t(p.rows), uint32_t(g.M), uint32_t(g.C),
          uint32_t(g.cd), uint32_t(g.ch), uint32_t(g.cw), p.map, chunk_dst);
    } else {
      puzzle_kernel<T, N, int64_t><<<grid, block, 0, stream>>>(
          src, st, chunk, p.first, p.rows, g.M, g.C, g.cd, g.ch, g.cw, p.map, chunk_dst);
    }
    throw_on_error(cudaGetLastError(), "kernel launch");
  });
}

template <typename T>
void launch(const Geometry& g, const std::vector<Slot>& slots, const void* src, void* dst,
            cudaStream_t stream) {
  const T* in = static_cast<const T*>(src);
  T* out = static_cast<T*>(dst);
  if (static_cast<int64_t>(slots.size()) <= kSmallChunk) {
    launch_chunks<T, kSmallChunk>(g, slots, in, out, stream);
  } else {
    launch_chunks<T, kLargeChunk>(g, slots, in, out, stream);
  }
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
  switch (g.itemsize) {
    case 1:
      launch<uint8_t>(g, slots, src, dst, stream);
      break;
    case 2:
      launch<uint16_t>(g, slots, src, dst, stream);
      break;
    case 4:
      launch<uint32_t>(g, slots, src, dst, stream);
      break;
    case 8:
      launch<uint64_t>(g, slots, src, dst, stream);
      break;
    default:
      check_itemsize(g.itemsize, "volumes");
  }
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
