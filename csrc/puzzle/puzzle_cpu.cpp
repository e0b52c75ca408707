// CPU side of the puzzle op: argument checks shared with the CUDA path, and the OpenMP kernel.
#include "puzzle/puzzle.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "utils/checks.h"

namespace rubikkit {
namespace puzzle {

namespace {

constexpr int64_t kMaxExtent = int64_t(1) << 40;  // keeps every offset product inside int64

int64_t checked_mul(int64_t a, int64_t b, const char* arg) {
  int64_t r = 0;
  check_arg(!__builtin_mul_overflow(a, b, &r), arg, "size overflows 64-bit indexing");
  return r;
}

}  // namespace

void check_geometry(const Geometry& g) {
  check_nonnegative(g.B, "volumes", "batch size B");
  check_nonnegative(g.C, "volumes", "channel count C");
  check_nonnegative(g.D, "volumes", "depth D");
  check_nonnegative(g.H, "volumes", "height H");
  check_nonnegative(g.W, "volumes", "width W");
  check_arg(g.M >= 1, "origins", "need at least one cube (M >= 1), got M = ", g.M);
  check_arg(g.cd >= 1 && g.ch >= 1 && g.cw >= 1, "cube_size", "every entry must be >= 1, got (",
            g.cd, ", ", g.ch, ", ", g.cw, ")");
  const int64_t extents[] = {g.B, g.M, g.C, g.D, g.H, g.W, g.cd, g.ch, g.cw};
  for (int64_t e : extents) check_arg(e <= kMaxExtent, "volumes", "extent ", e, " is too large");
  for (int i = 0; i < 5; ++i)
    check_arg(g.stride[i] >= -kMaxExtent && g.stride[i] <= kMaxExtent, "volumes", "stride ",
              g.stride[i], " is too large");
  check_itemsize(g.itemsize, "volumes");
  int64_t n = checked_mul(g.B, g.M, "out");
  n = checked_mul(n, g.C, "out");
  n = checked_mul(n, g.cd, "out");
  n = checked_mul(n, g.ch, "out");
  n = checked_mul(n, g.cw, "out");
  checked_mul(n, g.itemsize, "out");
}

namespace {

// "[p0, p1, ...]": row b of perms, for messages.
std::string row_text(const int64_t* row, int64_t M) {
  std::ostringstream os;
  os << '[';
  for (int64_t m = 0; m < M; ++m) os << (m ? ", " : "") << row[m];
  os << ']';
  return os.str();
}

}  // namespace

std::string find_slots(const Geometry& g, const int64_t* origins, const int64_t* perms,
                       const int64_t* rots, Slot* slots) {
  const int64_t B = g.B, M = g.M;
  if (B > 0 && M > 0) {
    if (origins == nullptr) return arg_message("origins", "null data");
    if (perms == nullptr) return arg_message("perms", "null data");
    if (rots == nullptr) return arg_message("rots", "null data");
  }
  std::vector<char> seen(static_cast<size_t>(M));
  for (int64_t b = 0; b < B; ++b) {
    std::fill(seen.begin(), seen.end(), 0);
    const int64_t* row = perms + b * M;
    for (int64_t m = 0; m < M; ++m) {
      const int64_t cell = row[m];
      if (cell < 0 || cell >= M) {
        return arg_message("perms", "row ", b, " = ", row_text(row, M),
                           " is not a permutation of 0..", M - 1, " (entry [", b, ", ", m,
                           "] = ", cell, " is outside 0..", M - 1, ")");
      }
      if (seen[cell]) {
        return arg_message("perms", "row ", b, " = ", row_text(row, M),
                           " is not a permutation of 0..", M - 1, " (it repeats cell ", cell, ")");
      }
      seen[cell] = 1;
      const int64_t rot = rots[b * M + m];
      if (rot < 0 || rot > 3) {
        return arg_message("rots", "entry [", b, ", ", m, "] = ", rot,
                           " is not a rotation code 0..3 (none, horizontal, vertical, both)");
      }
      const int64_t* o = origins + (b * M + cell) * 3;
      if (o[0] < 0 || o[1] < 0 || o[2] < 0 || o[0] > g.D - g.cd || o[1] > g.H - g.ch ||
          o[2] > g.W - g.cw) {
        return arg_message("origins", "the cube of cell ", cell, " in sample ", b,
                           " at (d, h, w) = (", o[0], ", ", o[1], ", ", o[2], ") with size (", g.cd,
                           ", ", g.ch, ", ", g.cw, ") is out of bounds of the volume (D, H, W) = (",
                           g.D, ", ", g.H, ", ", g.W, ")");
      }
      if (slots != nullptr) slots[b * M + m] = Slot{o[0], o[1], o[2], rot};
    }
  }
  return std::string();
}

std::vector<Slot> resolve_slots(const Geometry& g, const int64_t* origins, const int64_t* perms,
                                const int64_t* rots) {
  check_geometry(g);
  std::vector<Slot> slots(static_cast<size_t>(g.B * g.M));
  raise_if(find_slots(g, origins, perms, rots, slots.data()));
  return slots;
}

namespace {

// Copies one output row of cw elements; row points at the source element of output x = 0 before
// any W reversal (rw: output x reads source element cw-1-x). Source and output never overlap.
//
// Within a row the elements are read in the direction the rows are visited: right to left when
// the source rows are visited bottom-up (H reversed, rows_down), left to right otherwise. Reading
// a row against that direction (rows ascending, elements descending, or the reverse) throws the
// hardware prefetchers off: on an AMD EPYC rotation code 3 (D and W reversed) ran 1.6x slower
// than the others with a single reversed-read loop, and at their speed with this choice (inputs
// of benchmarks/puzzle.py, one thread). The reversed loops vectorise to loads, a shuffle, stores.
template <typename T>
inline void copy_row(T* __restrict__ o, const T* __restrict__ row, int64_t cw, int64_t s4, bool rw,
                     bool rows_down) {
  if (s4 != 1) {  // W not unit-stride (a transposed or sliced view): plain gathers
    if (rw) {
      for (int64_t x = 0; x < cw; ++x) o[x] = row[(cw - 1 - x) * s4];
    } else {
      for (int64_t x = 0; x < cw; ++x) o[x] = row[x * s4];
    }
  } else if (!rw && !rows_down) {
    std::memcpy(o, row, static_cast<size_t>(cw) * sizeof(T));
  } else if (!rw) {
    for (int64_t x = cw - 1; x >= 0; --x) o[x] = row[x];
  } else if (rows_down) {
    const T* last = row + (cw - 1);
    for (int64_t x = 0; x < cw; ++x) o[x] = last[-x];  // reads descend
  } else {
    T* o_last = o + (cw - 1);
    for (int64_t x = 0; x < cw; ++x) o_last[-x] = row[x];  // reads ascend
  }
}

// One task per output plane (slot, channel, cube row z); each plane is ch rows of cw elements.
template <typename T>
void puzzle_rows(const Geometry& g, const Slot* slots, const T* src, T* dst) {
  const int64_t planes = g.B * g.M * g.C * g.cd;
  const int64_t plane_elems = g.ch * g.cw;
  const int64_t s0 = g.stride[0], s1 = g.stride[1], s2 = g.stride[2], s3 = g.stride[3],
                s4 = g.stride[4];
  const int64_t cd = g.cd, ch = g.ch, cw = g.cw, C = g.C, M = g.M;
  const int64_t plane_bytes = plane_elems * int64_t(sizeof(T));
  // Threads only pay off beyond a few hundred kB.
  const bool parallel = planes > 1 && planes * plane_bytes > (256 << 10);
  // Chunks of ~256 kB handed out on demand rather than one fixed half per thread: on a machine
  // shared with other work (a data loader, other jobs) a thread that loses its core for a while
  // would otherwise hold up the whole op.
  const int64_t chunk =
      std::max<int64_t>(1, (int64_t(256) << 10) / std::max<int64_t>(1, plane_bytes));
  (void)parallel;
  (void)chunk;
#pragma omp parallel for schedule(dynamic, chunk) if (parallel)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t z = p % cd;
    const int64_t t = p / cd;
    const int64_t c = t % C;
    const int64_t s = t / C;
    const int64_t b = s / M;
    const Slot sl = slots[s];
    const bool rh = reverses_h(sl.rot), rw = reverses_w(sl.rot);
    const int64_t zs = reverses_d(sl.rot) ? cd - 1 - z : z;
    const T* base = src + b * s0 + c * s1 + (sl.d0 + zs) * s2 + sl.h0 * s3 + sl.w0 * s4;
    T* out = dst + p * plane_elems;
    for (int64_t y = 0; y < ch; ++y) {
      copy_row(out + y * cw, base + (rh ? ch - 1 - y : y) * s3, cw, s4, rw, rh);
    }
  }
}

}  // namespace

void puzzle_cpu(const Geometry& g, const std::vector<Slot>& slots, const void* src, void* dst) {
  check_geometry(g);
  check_arg(static_cast<int64_t>(slots.size()) == g.B * g.M, "perms", "slot table has ",
            slots.size(), " entries, expected B * M = ", g.B * g.M);
  if (g.out_numel() == 0) return;
  check_arg(src != nullptr, "volumes", "null data");
  check_arg(dst != nullptr, "out", "null data");
  switch (g.itemsize) {
    case 1:
      puzzle_rows(g, slots.data(), static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst));
      break;
    case 2:
      puzzle_rows(g, slots.data(), static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst));
      break;
    case 4:
      puzzle_rows(g, slots.data(), static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst));
      break;
    case 8:
      puzzle_rows(g, slots.data(), static_cast<const uint64_t*>(src), static_cast<uint64_t*>(dst));
      break;
    default:
      check_itemsize(g.itemsize, "volumes");
  }
}

}  // namespace puzzle
}  // namespace rubikkit
