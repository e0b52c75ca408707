// The Rubik's cube puzzle op: cut one cube per grid cell, rearrange, rotate by 180 degrees.
//
// volumes (B, C, D, H, W), any strides -> cubes (B, M, C, d, h, w), C-contiguous.
// Output slot m of sample b takes the cube of cell perms[b, m], cut at origins[b, perms[b, m]]
// and rotated by rots[b, m]: 0 none, 1 reverse H and W ("horizontal"), 2 reverse D and H
// ("vertical"), 3 reverse D and W (both). The plain definition is rubikkit/ops/reference.py.
//
// The kernels only move elements of 1, 2, 4 or 8 bytes: the op never looks at values, so every
// dtype of one size shares one instantiation (float16 travels as a 16-bit payload).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#define RUBIKKIT_HD __host__ __device__ __forceinline__
#else
#define RUBIKKIT_HD inline
#endif

namespace rubikkit {
namespace puzzle {

struct Geometry {
  int64_t B = 0, M = 0, C = 0;          // batch, cubes per sample, channels
  int64_t D = 0, H = 0, W = 0;          // volume size
  int64_t cd = 0, ch = 0, cw = 0;       // cube size (d, h, w)
  int64_t stride[5] = {0, 0, 0, 0, 0};  // volume strides in elements, axes (B, C, D, H, W)
  int64_t itemsize = 0;                 // bytes per element

  int64_t out_numel() const { return B * M * C * cd * ch * cw; }
};

// One entry per output slot s = b * M + m: the corner of the cube it receives and its rotation.
struct Slot {
  int64_t d0, h0, w0, rot;
};

RUBIKKIT_HD bool reverses_d(int64_t rot) { return rot >= 2; }
RUBIKKIT_HD bool reverses_h(int64_t rot) { return rot == 1 || rot == 2; }
RUBIKKIT_HD bool reverses_w(int64_t rot) { return rot == 1 || rot == 3; }

// Checks sizes, strides and item size; throws std::invalid_argument naming the argument.
void check_geometry(const Geometry& g);

// Checks the values of origins (B, M, 3), perms (B, M) and rots (B, M) (all C-contiguous int64)
// against g, whose sizes are valid (check_geometry): rows of perms are permutations of 0..M-1,
// codes are 0..3, every cube lies inside the volume. Writes the slot table to `slots` (B * M
// entries) unless it is null. Returns "" or the message of the first bad entry in row order,
// "<argument>: ...". Throws nothing but std::bad_alloc, so the Python layer checks values through
// it (rubikkit._C.layout_error) even where a C++ exception could not reach Python.
std::string find_slots(const Geometry& g, const int64_t* origins, const int64_t* perms,
                       const int64_t* rots, Slot* slots);

// check_geometry, then find_slots into a new table; throws std::invalid_argument naming the
// argument.
std::vector<Slot> resolve_slots(const Geometry& g, const int64_t* origins, const int64_t* perms,
                                const int64_t* rots);

// CPU kernel (OpenMP over rows of the output). src points at volumes[0, 0, 0, 0, 0].
void puzzle_cpu(const Geometry& g, const std::vector<Slot>& slots, const void* src, void* dst);

#if defined(RUBIKKIT_WITH_CUDA)
// CUDA kernel on `stream` (a cudaStream_t passed as an integer) of device `device`; src and dst
// are device pointers. Returns once the work is queued.
void puzzle_cuda(const Geometry& g, const std::vector<Slot>& slots, const void* src, void* dst,
                 int device, std::uintptr_t stream);

// Number of CUDA devices, 0 when there is no driver or no device (never throws).
int cuda_device_count();
#endif

}  // namespace puzzle
}  // namespace rubikkit
