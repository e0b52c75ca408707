"""Build rubikkit's compiled extension ``rubikkit._C``.

The extension is plain pybind11 over buffers (no PyTorch C++ API), so it builds in seconds and
does not depend on the installed torch version.

Environment switches
--------------------
RUBIKKIT_NO_EXT=1   build no extension at all (rubikkit then warns once and uses the numpy reference).
RUBIKKIT_CUDA=1     require the CUDA kernels (fail if nvcc is missing); =0 skip them; unset: build
                    them when ``nvcc`` is found on PATH or in CUDA_HOME/bin.
RUBIKKIT_CUDA_ARCH  semicolon-separated compute capabilities ("80;90", "8.0;9.0a"), default
                    "75;80;86;89;90" (sm_75 and newer; PTX for the newest is embedded for forward
                    compatibility). A change of them recompiles the CUDA kernels.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
# Said when a build step fails: the compiler's own message is printed above this one.
NO_EXT_HINT = (
    "set RUBIKKIT_NO_EXT=1 to install without the extension "
    "(rubikkit then runs the numpy reference, slower, and warns once)"
)


def _find_nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _cuda_roots(nvcc: str):
    """Candidate CUDA installation roots, most specific first."""
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            yield Path(os.environ[env])
    yield Path(nvcc).resolve().parent.parent
    # nvcc may be a wrapper script; its --dryrun output names the folder of the real binary.
    try:
        dry = subprocess.run(
            [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for line in (dry.stdout + dry.stderr).splitlines():
            if "_HERE_=" in line:
                yield Path(line.split("_HERE_=", 1)[1].strip()).resolve().parent
    except (OSError, subprocess.SubprocessError):
        pass
    yield Path("/usr/local/cuda")


def _cudart_dir(nvcc: str) -> Path:
    """The folder holding libcudart_static.a (cudart is linked statically)."""
    seen = []
    for root in _cuda_roots(nvcc):
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
            d = root / sub
            seen.append(str(d))
            if (d / "libcudart_static.a").exists():
                return d
    raise RuntimeError(
        "rubikkit: nvcc found but libcudart_static.a is not in any of: "
        + ", ".join(seen)
        + " (set CUDA_HOME, or RUBIKKIT_CUDA=0 to skip the CUDA kernels)"
    )


def _cuda_archs() -> list[str]:
    """RUBIKKIT_CUDA_ARCH as nvcc's architecture names: "8.0;90a" gives ["80", "90a"]."""
    raw = os.environ.get("RUBIKKIT_CUDA_ARCH", "75;80;86;89;90")
    archs = [a.strip().replace(".", "") for a in raw.split(";") if a.strip()]
    if not archs or not all(re.fullmatch(r"\d+[af]?", a) for a in archs):
        raise CompileError(
            f"rubikkit: RUBIKKIT_CUDA_ARCH={raw!r}: expected compute capabilities separated by ';', "
            'e.g. "80;90" or "8.0;9.0a"'
        )
    return archs


def _want_cuda() -> str | None:
    flag = os.environ.get("RUBIKKIT_CUDA", "").strip()
    nvcc = _find_nvcc()
    if flag == "0":
        return None
    if flag == "1" and nvcc is None:
        raise RuntimeError("RUBIKKIT_CUDA=1 but nvcc was not found on PATH or in CUDA_HOME/bin")
    return nvcc


class BuildExt(build_ext):
    """build_ext that compiles ``.cu`` sources with nvcc and links cudart statically."""

    def build_extensions(self):
        nvcc = _want_cuda()
        for ext in self.extensions:
            cu_sources = [s for s in ext.sources if s.endswith(".cu")]
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
            if nvcc and cu_sources:
                try:
                    cu_objects = self._nvcc_compile(nvcc, cu_sources, ext.include_dirs)
                except (OSError, subprocess.CalledProcessError) as exc:
                    raise CompileError(
                        "rubikkit: nvcc could not compile the CUDA kernels; set RUBIKKIT_CUDA=0 "
                        f"to build the CPU extension only, or {NO_EXT_HINT}. The failure: {exc}"
                    ) from exc
                ext.extra_objects = list(ext.extra_objects or []) + cu_objects
                # build_ext relinks only when a source or dependency is newer than the module:
                # a rebuilt .cu object must count, or a change to a kernel alone never lands.
                ext.depends = list(ext.depends or []) + cu_objects
                ext.define_macros = list(ext.define_macros or []) + [("RUBIKKIT_WITH_CUDA", "1")]
                ext.library_dirs = list(ext.library_dirs or []) + [str(_cudart_dir(nvcc))]
                # Static cudart: the module then needs only the driver (libcuda) at run time,
                # and imports fine on machines without one.
                ext.libraries = list(ext.libraries or []) + ["cudart_static", "dl", "rt", "pthread"]
                print(f"rubikkit: building CUDA kernels with {nvcc}")
            else:
                print("rubikkit: building the CPU extension only (no nvcc, or RUBIKKIT_CUDA=0)")
        try:
            super().build_extensions()
        except (CCompilerError, ExecError, OSError) as exc:
            raise CompileError(
                "rubikkit: building rubikkit._C failed; it needs a C++17 compiler with OpenMP "
                f"(g++ or clang++, named by CXX); {NO_EXT_HINT}. The failure: {exc}"
            ) from exc

    def _nvcc_compile(self, nvcc, sources, include_dirs):
        archs = _cuda_archs()
        gencode = []
        for a in archs:
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        # PTX of the newest plain architecture ("90" for "90a", whose PTX would not run elsewhere).
        newest = max(int(a.rstrip("af")) for a in archs)
        gencode += ["-gencode", f"arch=compute_{newest},code=compute_{newest}"]
        flags = [
            "-O3", "-std=c++17", "--expt-relaxed-constexpr",
            "-Xcompiler", "-fPIC", "-DRUBIKKIT_WITH_CUDA=1",
        ]  # fmt: skip
        objects = []
        build_dir = Path(self.build_temp) / "cuda"
        build_dir.mkdir(parents=True, exist_ok=True)
        headers = [p.stat().st_mtime for p in CSRC.rglob("*.h")]
        for src in sources:
            obj = build_dir / (Path(src).stem + "_cu.o")
            # The object is reused only if made by the same nvcc with the same flags: a build for
            # other RUBIKKIT_CUDA_ARCH architectures must not link the last build's kernels.
            stamp = obj.with_suffix(".cmd")
            made_by = " ".join([nvcc, src, *flags, *gencode])
            newest_input = max([Path(src).stat().st_mtime, *headers])
            if (
                obj.exists()
                and obj.stat().st_mtime >= newest_input
                and stamp.exists()
                and stamp.read_text() == made_by
                and not self.force
            ):
                objects.append(str(obj))
                continue
            cmd = [
                nvcc, "-c", src, "-o", str(obj), *flags,
                *[f"-I{d}" for d in include_dirs], *gencode,
            ]  # fmt: skip
            print(" ".join(cmd))
            subprocess.check_call(cmd)
            stamp.write_text(made_by)
            objects.append(str(obj))
        return objects


def _extensions():
    if os.environ.get("RUBIKKIT_NO_EXT", "") == "1":
        return []
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError as exc:  # --no-build-isolation in an environment without it
        raise SystemExit(
            f"rubikkit: building rubikkit._C needs pybind11 ({exc}). With --no-build-isolation, "
            'install the build requirements first: pip install "setuptools>=68" wheel '
            f'"pybind11>=2.12"; or {NO_EXT_HINT}'
        ) from exc

    cpp = sorted(str(p.relative_to(ROOT)) for p in CSRC.rglob("*.cpp"))
    cu = sorted(str(p.relative_to(ROOT)) for p in CSRC.rglob("*.cu"))
    if not cpp:
        return []
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    return [
        Pybind11Extension(
            "rubikkit._C",
            sources=cpp + cu,
            depends=sorted(str(p.relative_to(ROOT)) for p in CSRC.rglob("*.h")),
            include_dirs=[str(CSRC)],
            cxx_std=17,
            extra_compile_args=["-O3", *openmp],
            # Symbols of static archives stay inside the module: a libstdc++.a that a toolchain
            # links in (one with no libstdc++.so) and libcudart_static.a can then neither
            # interpose on nor be interposed by the copies other extensions bring into the process.
            extra_link_args=openmp
            + (["-Wl,--exclude-libs,ALL"] if sys.platform.startswith("linux") else []),
            # Named, not left to the linker driver: where LDSHARED is the C compiler (gcc -shared)
            # the module was linked without libstdc++, and every C++ exception it threw crashed.
            libraries=["stdc++"] if sys.platform.startswith("linux") else [],
        )
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
