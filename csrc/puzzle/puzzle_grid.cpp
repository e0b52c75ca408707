// Host run of the CUDA kernel's grid (see puzzle_grid.h): the test aid that checks the kernel's
// index arithmetic on machines without a GPU.
#include "puzzle/puzzle_grid.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "utils/checks.h"

namespace rubikkit {
namespace puzzle {

namespace {

template <typename T, typename I>
void run_grid(const Geometry& g, const Slot* slots, const ChunkPlan& p, I first, const T* src,
              const Strides& st, T* dst) {
  const unsigned gx = static_cast<unsigned>(p.blocks);
  for (unsigned bx = 0; bx < gx; ++bx) {
    for (unsigned ty = 0; ty < unsigned(kWarpsPerBlock); ++ty) {
      for (unsigned tx = 0; tx < unsigned(kWarp); ++tx) {
        copy_thread_rows<T, I>(src, st, slots, first, I(p.rows), I(g.M), I(g.C), I(g.cd), I(g.ch),
                               I(g.cw), p.map, dst, tx, ty, bx, gx);
      }
    }
  }
}

template <typename T>
void run_chunks(const Geometry& g, const std::vector<Slot>& slots, const T* src, T* dst,
                int64_t chunk, int64_t max_blocks, bool wide) {
  const Strides st = strides_of(g);
  const int64_t total = static_cast<int64_t>(slots.size());
  for_each_launch(g, total, chunk, wide, max_blocks, [&](const ChunkPlan& p) {
    const Slot* part = slots.data() + p.first;  // the kernel's copy of the chunk
    if (p.narrow) {
      run_grid<T, uint32_t>(g, part, p, uint32_t(p.first), src, st, dst + p.out_offset);
    } else {
      run_grid<T, int64_t>(g, part, p, p.first, src, st, dst + p.out_offset);
    }
  });
}

}  // namespace

void puzzle_grid_on_host(const Geometry& g, const std::vector<Slot>& slots, const void* src,
                         void* dst, int64_t chunk, int64_t max_blocks, bool wide) {
  check_geometry(g);
  check_arg(static_cast<int64_t>(slots.size()) == g.B * g.M, "perms", "slot table has ",
            slots.size(), " entries, expected B * M = ", g.B * g.M);
  check_arg(chunk >= 1, "chunk", "must be >= 1, got ", chunk);
  check_arg(max_blocks >= 1 && max_blocks <= kMaxBlocks, "max_blocks", "must be in [1, ",
            kMaxBlocks, "], got ", max_blocks);
  if (g.out_numel() == 0) return;
  switch (g.itemsize) {
    case 1:
      run_chunks(g, slots, static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), chunk,
                 max_blocks, wide);
      break;
    case 2:
      run_chunks(g, slots, static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), chunk,
                 max_blocks, wide);
      break;
    case 4:
      run_chunks(g, slots, static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), chunk,
                 max_blocks, wide);
      break;
    case 8:
      run_chunks(g, slots, static_cast<const uint64_t*>(src), static_cast<uint64_t*>(dst), chunk,
                 max_blocks, wide);
      break;
    default:
      check_itemsize(g.itemsize, "volumes");
  }
}

}  // namespace puzzle
}  // namespace rubikkit
