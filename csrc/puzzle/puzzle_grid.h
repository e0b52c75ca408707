// The CUDA puzzle kernel's launch plan and per-thread work, written once for two callers: the
// kernel in puzzle.cu, and puzzle_grid_on_host in puzzle_grid.cpp, which runs the same thread
// body on the CPU for every (block, thread) of the same grid. The second is how the kernel's
// index arithmetic (chunks, rows sharing a warp, grid-stride steps, 32- and 64-bit rows) is
// tested on machines without a GPU; it is a test aid, one thread at a time, not a fast path.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "puzzle/puzzle.h"

namespace rubikkit {
namespace puzzle {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;                 // blockDim = (32, 8)
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loop beyond this

struct Strides {
  int64_t s[5];
};

// Lanes per output row: a row of cw < 32 elements takes cw lanes and a warp copies 32 / cw rows
// side by side (12^3 cubes, the 28^3 pre-training input: 2 rows, 24 busy lanes where one row per
// warp kept 20 of 32 idle); a longer row takes the whole warp, each lane every 32nd element.
struct RowMap {
  int span;           // lanes per row: min(cw, 32)
  int rows_per_warp;  // 32 / span
};

inline Strides strides_of(const Geometry& g) {
  Strides st;
  for (int i = 0; i < 5; ++i) st.s[i] = g.stride[i];
  return st;
}

// One launch over `count` slots starting at slot `first`.
struct ChunkPlan {
  int64_t first = 0, count = 0;
  int64_t out_offset = 0;  // elements of the output before the launch's first row
  int64_t rows = 0;        // output rows of the launch: count * C * cd * ch
  int64_t blocks = 0;      // grid size, at most max_blocks
  RowMap map{1, 1};
  bool narrow = false;  // 32-bit row arithmetic
};

// The grid of one launch. Row arithmetic is 32-bit when no value of it (the last row plus one
// grid step included) reaches 2^32 and `wide` is false; offsets into memory are 64-bit always.
inline ChunkPlan plan_chunk(const Geometry& g, int64_t first, int64_t count, bool wide,
                            int64_t max_blocks = kMaxBlocks) {
  ChunkPlan p;
  p.first = first;
  p.count = count;
  p.out_offset = first * g.C * g.cd * g.ch * g.cw;
  p.map.span = static_cast<int>(std::min<int64_t>(g.cw, kWarp));
  p.map.rows_per_warp = kWarp / p.map.span;
  const int64_t rows_per_block = int64_t(kWarpsPerBlock) * p.map.rows_per_warp;
  p.rows = count * g.C * g.cd * g.ch;
  p.blocks = std::min((p.rows + rows_per_block - 1) / rows_per_block, max_blocks);
  const int64_t limit = int64_t(UINT32_MAX);
  p.narrow = !wide && p.rows + p.blocks * rows_per_block <= limit && first + count <= limit &&
             g.M <= limit && g.cw <= limit;
  return p;
}

// Calls launch(plan) for each launch over `total` slots, in chunks of `chunk` (the last may be
// partial): the one loop of the CUDA path and of its host run.
template <typename F>
void for_each_launch(const Geometry& g, int64_t total, int64_t chunk, bool wide, int64_t max_blocks,
                     F&& launch) {
  for (int64_t first = 0; first < total; first += chunk) {
    launch(plan_chunk(g, first, std::min(chunk, total - first), wide, max_blocks));
  }
}

// The work of thread (tx, ty) of block bx in a grid of gx blocks: the rows
// row = ((s * C + c) * cd + z) * ch + y of the launch it owns, s counted from the launch's first
// slot `first`, whose sample is (first + s) / M; dst points at the launch's first output row.
// I is the type of the row arithmetic (integer division is several times cheaper on 32 bits).
template <typename T, typename I>
RUBIKKIT_HD void copy_thread_rows(const T* __restrict__ src, const Strides& st,
                                  const Slot* __restrict__ slots, I first, I rows, I M, I C, I cd,
                                  I ch, I cw, RowMap map, T* __restrict__ dst, unsigned tx,
                                  unsigned ty, unsigned bx, unsigned gx) {
  const int sub = int(tx) / map.span;    // which of the warp's rows this lane copies
  if (sub >= map.rows_per_warp) return;  // lanes past rows_per_warp * span stay idle
  const I x0 = I(tx) - I(sub * map.span);
  const I step = I(gx) * I(kWarpsPerBlock * map.rows_per_warp);
  for (I row = (I(bx) * kWarpsPerBlock + I(ty)) * map.rows_per_warp + sub; row < rows;
       row += step) {
    const I y = row % ch;
    I t = row / ch;
    const I z = t % cd;
    t /= cd;
    const I c = t % C;
    const I s = t / C;
    const I b = (first + s) / M;
    const Slot sl = slots[s];
    const I zs = reverses_d(sl.rot) ? cd - 1 - z : z;
    const I ys = reverses_h(sl.rot) ? ch - 1 - y : y;
    const bool rw = reverses_w(sl.rot);
    const T* in = src + int64_t(b) * st.s[0] + int64_t(c) * st.s[1] +
                  (sl.d0 + int64_t(zs)) * st.s[2] + (sl.h0 + int64_t(ys)) * st.s[3] +
                  sl.w0 * st.s[4];
    T* out = dst + int64_t(row) * int64_t(cw);
    for (I x = x0; x < cw; x += I(map.span)) {
      out[x] = in[int64_t(rw ? cw - 1 - x : x) * st.s[4]];
    }
  }
}

// The CUDA kernel's launches over `slots`, in chunks of `chunk` slots, each run on the host
// thread by thread (no device, no OpenMP). src points at volumes[0, 0, 0, 0, 0]; g and slots are
// checked (resolve_slots).
void puzzle_grid_on_host(const Geometry& g, const std::vector<Slot>& slots, const void* src,
                         void* dst, int64_t chunk, int64_t max_blocks, bool wide);

}  // namespace puzzle
}  // namespace rubikkit
