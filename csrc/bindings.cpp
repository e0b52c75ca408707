// The single Python module rubikkit._C: thin pybind11 wrappers over buffers (no PyTorch C++ API).
//
// Python (rubikkit/ops/puzzle.py) validates and documents; these wrappers translate buffers into
// the kernels' Geometry and check everything again, so a bad direct call raises
// ValueError/TypeError and never touches memory outside its arguments.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "puzzle/puzzle.h"
#include "puzzle/puzzle_grid.h"
#include "utils/checks.h"

namespace py = pybind11;
using rubikkit::check_arg;
using rubikkit::puzzle::Geometry;

namespace {

using IntArray = py::array_t<int64_t, py::array::c_style>;

// [lowest, highest) byte address a strided buffer can touch; empty buffers give {0, 0}.
std::array<std::uintptr_t, 2> byte_span(const py::buffer_info& info) {
  auto base = reinterpret_cast<std::uintptr_t>(info.ptr);
  std::intptr_t lo = 0, hi = 0;
  for (py::ssize_t i = 0; i < info.ndim; ++i) {
    if (info.shape[i] == 0) return {0, 0};
    const std::intptr_t reach = (info.shape[i] - 1) * info.strides[i];
    (reach < 0 ? lo : hi) += reach;
  }
  return {base + lo, base + hi + static_cast<std::uintptr_t>(info.itemsize)};
}

// The sizes of volumes of `shape` (B, C, D, H, W) cut into cubes of `cube`; M, strides and the
// item size are left for the caller.
template <typename Shape>
Geometry volume_geometry(const Shape& shape, const std::array<int64_t, 3>& cube) {
  Geometry g;
  g.B = shape[0];
  g.C = shape[1];
  g.D = shape[2];
  g.H = shape[3];
  g.W = shape[4];
  g.cd = cube[0];
  g.ch = cube[1];
  g.cw = cube[2];
  return g;
}

// "" when origins is (B, M, 3) and perms and rots are (B, M), else the message naming the first
// misshapen one. B < 0 takes B from origins.
std::string layout_shape_error(const IntArray& origins, const IntArray& perms, const IntArray& rots,
                               int64_t B) {
  if (origins.ndim() != 3 || (B >= 0 && origins.shape(0) != B) || origins.shape(2) != 3) {
    return B >= 0 ? rubikkit::arg_message("origins", "expected shape (B, M, 3) with B = ", B)
                  : rubikkit::arg_message("origins", "expected shape (B, M, 3)");
  }
  B = origins.shape(0);
  const int64_t M = origins.shape(1);
  if (perms.ndim() != 2 || perms.shape(0) != B || perms.shape(1) != M) {
    return rubikkit::arg_message("perms", "expected shape (B, M) = (", B, ", ", M, ")");
  }
  if (rots.ndim() != 2 || rots.shape(0) != B || rots.shape(1) != M) {
    return rubikkit::arg_message("rots", "expected shape (B, M) = (", B, ", ", M, ")");
  }
  return std::string();
}

// The Python layer's check of the layout's values: "" or the message of the first bad entry.
// Returns every error instead of raising it (see find_slots).
std::string layout_error(const IntArray& origins, const IntArray& perms, const IntArray& rots,
                         const std::array<int64_t, 3>& volume_dhw,
                         const std::array<int64_t, 3>& cube) {
  std::string err = layout_shape_error(origins, perms, rots, -1);
  if (!err.empty()) return err;
  const std::array<int64_t, 5> shape = {origins.shape(0), 1, volume_dhw[0], volume_dhw[1],
                                        volume_dhw[2]};
  Geometry g = volume_geometry(shape, cube);
  g.M = origins.shape(1);
  if (g.M < 1) return rubikkit::arg_message("origins", "need at least one cube (M >= 1)");
  if (g.cd < 1 || g.ch < 1 || g.cw < 1) {
    return rubikkit::arg_message("cube_size", "every entry must be >= 1, got (", g.cd, ", ", g.ch,
                                 ", ", g.cw, ")");
  }
  if (g.D < 0 || g.H < 0 || g.W < 0) {
    return rubikkit::arg_message("volume_shape", "sizes must be >= 0, got (", g.D, ", ", g.H, ", ",
                                 g.W, ")");
  }
  return rubikkit::puzzle::find_slots(g, origins.data(), perms.data(), rots.data(), nullptr);
}

// A checked call on host buffers: the geometry, the slot table and both buffers (held, so their
// pointers stay valid).
struct HostCall {
  py::buffer_info vi, oi;
  Geometry g;
  std::vector<rubikkit::puzzle::Slot> slots;
};

HostCall host_call(const py::buffer& volumes, const IntArray& origins, const IntArray& perms,
                   const IntArray& rots, const std::array<int64_t, 3>& cube,
                   const py::buffer& out) {
  HostCall call;
  call.vi = volumes.request();
  call.oi = out.request();
  const py::buffer_info& vi = call.vi;
  const py::buffer_info& oi = call.oi;
  check_arg(vi.ndim == 5, "volumes", "expected 5 dimensions (B, C, D, H, W), got ", vi.ndim);
  rubikkit::check_itemsize(vi.itemsize, "volumes");
  check_arg(oi.itemsize == vi.itemsize, "out", "item size ", oi.itemsize, " differs from volumes' ",
            vi.itemsize);
  check_arg(!oi.readonly, "out", "buffer is read-only");
  check_arg(reinterpret_cast<std::uintptr_t>(vi.ptr) % vi.itemsize == 0, "volumes",
            "data is not aligned to its item size");
  check_arg(reinterpret_cast<std::uintptr_t>(oi.ptr) % oi.itemsize == 0, "out",
            "data is not aligned to its item size");

  Geometry g = volume_geometry(vi.shape, cube);
  g.itemsize = vi.itemsize;
  for (int i = 0; i < 5; ++i) {
    check_arg(vi.strides[i] % vi.itemsize == 0, "volumes", "stride ", vi.strides[i],
              " bytes is not a multiple of the item size ", vi.itemsize);
    g.stride[i] = vi.strides[i] / vi.itemsize;
  }
  rubikkit::raise_if(layout_shape_error(origins, perms, rots, g.B));
  g.M = origins.shape(1);
  rubikkit::puzzle::check_geometry(g);  // sizes first, so a bad cube_size is named as such

  const std::vector<int64_t> want = {g.B, g.M, g.C, g.cd, g.ch, g.cw};
  check_arg(oi.ndim == 6 && std::vector<int64_t>(oi.shape.begin(), oi.shape.end()) == want, "out",
            "expected shape (B, M, C, d, h, w) = (", g.B, ", ", g.M, ", ", g.C, ", ", g.cd, ", ",
            g.ch, ", ", g.cw, ")");
  int64_t expect = oi.itemsize;
  for (int i = 5; i >= 0; --i) {
    check_arg(oi.shape[i] <= 1 || oi.strides[i] == expect, "out", "must be C-contiguous");
    expect *= oi.shape[i];
  }
  const auto vs = byte_span(vi), os = byte_span(oi);
  check_arg(vs[0] == vs[1] || os[0] == os[1] || os[1] <= vs[0] || vs[1] <= os[0], "out",
            "shares memory with volumes");

  // Bounds, permutations and codes are checked here, before any memory is touched.
  call.slots = rubikkit::puzzle::resolve_slots(g, origins.data(), perms.data(), rots.data());
  call.g = g;
  return call;
}

void puzzle_cpu(const py::buffer& volumes, const IntArray& origins, const IntArray& perms,
                const IntArray& rots, const std::array<int64_t, 3>& cube, const py::buffer& out) {
  const HostCall call = host_call(volumes, origins, perms, rots, cube, out);
  py::gil_scoped_release release;
  rubikkit::puzzle::puzzle_cpu(call.g, call.slots, call.vi.ptr, call.oi.ptr);
}

void puzzle_grid_on_host(const py::buffer& volumes, const IntArray& origins, const IntArray& perms,
                         const IntArray& rots, const std::array<int64_t, 3>& cube,
                         const py::buffer& out, int64_t chunk, int64_t max_blocks, bool wide) {
  const HostCall call = host_call(volumes, origins, perms, rots, cube, out);
  py::gil_scoped_release release;
  rubikkit::puzzle::puzzle_grid_on_host(call.g, call.slots, call.vi.ptr, call.oi.ptr, chunk,
                                        max_blocks, wide);
}

// The launch plan of one CUDA launch over `count` slots from slot `first`, for sizes only (no
// buffers): what the tests read to check where the 32-bit row arithmetic stops.
py::dict puzzle_launch_plan(const std::vector<int64_t>& bmc, const std::array<int64_t, 3>& cube,
                            int64_t first, int64_t count, bool wide) {
  check_arg(bmc.size() == 3, "bmc", "expected (B, M, C), got ", bmc.size(), " values");
  const std::array<int64_t, 5> shape = {bmc[0], bmc[2], 0, 0, 0};  // no volume: sizes only
  Geometry g = volume_geometry(shape, cube);
  g.M = bmc[1];
  g.itemsize = 1;
  rubikkit::puzzle::check_geometry(g);
  check_arg(first >= 0 && count >= 1 && first + count <= g.B * g.M, "count",
            "slots [first, first + count) must lie in [0, B * M), got first = ", first,
            ", count = ", count);
  const auto p = rubikkit::puzzle::plan_chunk(g, first, count, wide);
  py::dict d;
  d["rows"] = p.rows;
  d["blocks"] = p.blocks;
  d["span"] = p.map.span;
  d["rows_per_warp"] = p.map.rows_per_warp;
  d["narrow"] = p.narrow;
  return d;
}

#if defined(RUBIKKIT_WITH_CUDA)
void puzzle_cuda(std::uintptr_t volumes_ptr, const std::vector<int64_t>& shape,
                 const std::vector<int64_t>& strides, int64_t itemsize, const IntArray& origins,
                 const IntArray& perms, const IntArray& rots, const std::array<int64_t, 3>& cube,
                 std::uintptr_t out_ptr, int64_t out_numel, int device, std::uintptr_t stream) {
  check_arg(shape.size() == 5, "volumes", "expected 5 dimensions (B, C, D, H, W), got ",
            shape.size());
  check_arg(strides.size() == 5, "volumes", "expected 5 strides, got ", strides.size());
  rubikkit::check_itemsize(itemsize, "volumes");
  Geometry g = volume_geometry(shape, cube);
  g.itemsize = itemsize;
  for (int i = 0; i < 5; ++i) g.stride[i] = strides[i];
  rubikkit::raise_if(layout_shape_error(origins, perms, rots, g.B));
  g.M = origins.shape(1);
  const auto slots = rubikkit::puzzle::resolve_slots(g, origins.data(), perms.data(), rots.data());
  check_arg(out_numel == g.out_numel(), "out", "has ", out_numel,
            " elements, expected B * M * C * d * h * w = ", g.out_numel());
  check_arg(volumes_ptr % itemsize == 0, "volumes", "data is not aligned to its item size");
  check_arg(out_ptr % itemsize == 0, "out", "data is not aligned to its item size");
  py::gil_scoped_release release;
  rubikkit::puzzle::puzzle_cuda(g, slots, reinterpret_cast<const void*>(volumes_ptr),
                                reinterpret_cast<void*>(out_ptr), device, stream);
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "rubikkit compiled kernels (C++/OpenMP, and CUDA when built with nvcc)";

  m.def(
      "with_cuda",
      []() {
#if defined(RUBIKKIT_WITH_CUDA)
        return true;
#else
        return false;
#endif
      },
      "True when the module was compiled with the CUDA kernels.");

  m.def(
      "openmp_max_threads",
      []() {
#if defined(_OPENMP)
        return omp_get_max_threads();
#else
        return 1;
#endif
      },
      "Threads an OpenMP parallel region uses (1 without OpenMP).");

  m.def("puzzle_cpu", &puzzle_cpu, py::arg("volumes"), py::arg("origins").noconvert(),
        py::arg("perms").noconvert(), py::arg("rots").noconvert(), py::arg("cube_size"),
        py::arg("out"),
        "Puzzle kernel on host buffers: volumes (B, C, D, H, W) any strides; origins (B, M, 3), "
        "perms (B, M), rots (B, M) C-contiguous int64; out (B, M, C, d, h, w) C-contiguous.");

  m.def("_puzzle_grid_on_host", &puzzle_grid_on_host, py::arg("volumes"),
        py::arg("origins").noconvert(), py::arg("perms").noconvert(), py::arg("rots").noconvert(),
        py::arg("cube_size"), py::arg("out"), py::arg("chunk"), py::arg("max_blocks"),
        py::arg("wide"),
        "Test aid: the CUDA kernel's launches (chunks of `chunk` slots, grids of at most "
        "`max_blocks` blocks, 64-bit rows when `wide`) run on the CPU one thread at a time, with "
        "the arguments of puzzle_cpu. Checks the kernel's index arithmetic without a GPU.");
  m.def("_puzzle_launch_plan", &puzzle_launch_plan, py::arg("bmc"), py::arg("cube_size"),
        py::arg("first"), py::arg("count"), py::arg("wide") = false,
        "Test aid: the CUDA launch over slots [first, first + count) of a (B, M, C) batch of "
        "cubes: {'rows', 'blocks', 'span', 'rows_per_warp', 'narrow' (32-bit rows)}.");

  m.def("layout_error", &layout_error, py::arg("origins").noconvert(), py::arg("perms").noconvert(),
        py::arg("rots").noconvert(), py::arg("volume_dhw"), py::arg("cube_size"),
        "Checks a puzzle layout without raising: origins (B, M, 3), perms (B, M), rots (B, M) "
        "C-contiguous int64 against the volume's (D, H, W) and the cube size; returns '' or the "
        "message of the first bad entry, naming the argument.");

#if defined(RUBIKKIT_WITH_CUDA)
  m.def("puzzle_cuda", &puzzle_cuda, py::arg("volumes_ptr"), py::arg("shape"), py::arg("strides"),
        py::arg("itemsize"), py::arg("origins").noconvert(), py::arg("perms").noconvert(),
        py::arg("rots").noconvert(), py::arg("cube_size"), py::arg("out_ptr"), py::arg("out_numel"),
        py::arg("device"), py::arg("stream"),
        "Puzzle kernel on device pointers (strides in elements), queued on `stream`.");
  m.def("cuda_device_count", &rubikkit::puzzle::cuda_device_count,
        "CUDA devices visible to the extension; 0 without a driver or device.");
#endif
}
