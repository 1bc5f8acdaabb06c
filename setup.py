"""Builds fastloss: the Python package, the Triton kernels (as fastloss.kernels) and the
compiled extension fastloss._C (C++ CPU kernels always; CUDA kernels when nvcc is found).

Environment switches:
  FASTLOSS_CUDA=0       CPU-only build, even where nvcc exists.
  FASTLOSS_CUDA=1       CUDA build, failing loudly when nvcc or CUDA_HOME cannot be found.
  TORCH_CUDA_ARCH_LIST  GPU targets, default "8.0;9.0+PTX" (sm_80, sm_90 and PTX for sm_90);
                        `make wheel` defaults to every arch the toolkit has from sm_80 on.
  MAX_JOBS              parallel compile jobs (ninja).

A build is tied to the torch it was built against (the extension's C++ ABI): its version says
so (0.1.0+cu130torch2.14, 0.1.0+cputorch2.14) and its metadata requires that torch minor
version. A source distribution has neither.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
VERSION = "0.1.0"
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
# The torch versions fastloss supports (the README's "Supported versions" says why these).
TORCH_OLDEST = (2, 11)
TORCH_NEWEST = (2, 14)
BUILDING_SDIST = "sdist" in sys.argv  # a source distribution: no build-specific version or pin


def torch_minor(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def check_torch() -> tuple[int, int]:
    """The installed torch's (major, minor); a build against an unsupported one stops here."""
    import torch

    found = torch_minor(torch.__version__)
    oldest, newest = ".".join(map(str, TORCH_OLDEST)), ".".join(map(str, TORCH_NEWEST))
    if found < TORCH_OLDEST:
        sys.exit(f"fastloss: torch {torch.__version__} is older than the oldest supported, {oldest} "
                 f"(fastloss supports torch {oldest} to {newest}): upgrade torch, then build again")
    if found > TORCH_NEWEST:
        print(f"fastloss: warning: torch {torch.__version__} is newer than the newest checked, {newest}; "
              f"building anyway", file=sys.stderr)
    return found


def find_cuda_home() -> str | None:
    """CUDA_HOME if set; else the toolkit holding a real nvcc (not a wrapper script)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(os.path.realpath(nvcc)).parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if (home / "bin" / "nvcc").exists() and (home / "include" / "cuda_runtime.h").exists():
            return str(home)
    return None


def want_cuda() -> bool:
    switch = os.environ.get("FASTLOSS_CUDA", "").strip()
    if switch not in ("", "0", "1"):
        sys.exit(f"fastloss: FASTLOSS_CUDA must be 0, 1 or unset, got {switch!r}")
    cuda_home = find_cuda_home()
    if switch == "0":
        return False
    if cuda_home is None:
        if switch == "1":
            sys.exit("fastloss: FASTLOSS_CUDA=1 but no CUDA toolkit was found: "
                     "set CUDA_HOME to the toolkit that holds bin/nvcc")
        return False
    # torch.utils.cpp_extension reads CUDA_HOME when imported; a wrapper nvcc on PATH would
    # otherwise make it guess a wrong toolkit root and the link against cudart fail.
    os.environ["CUDA_HOME"] = cuda_home
    return True


def nvcc_version(cuda_home: str) -> str:
    out = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"],
                         capture_output=True, text=True, check=True).stdout
    for token in out.replace(",", " ").split():
        if token.startswith("V") and token[1:2].isdigit():
            return ".".join(token[1:].split(".")[:2])
    return "unknown"


def write_build_info(with_cuda: bool, arch_list: str) -> Path:
    """Build facts for fastloss._C, as a generated header (no quoting through the shell)."""
    import torch

    out_dir = ROOT / "build" / "generated"
    out_dir.mkdir(parents=True, exist_ok=True)
    cuda = nvcc_version(os.environ["CUDA_HOME"]) if with_cuda else ""
    lines = [
        "#pragma once",
        f'#define FASTLOSS_TORCH_VERSION "{torch.__version__}"',
        f'#define FASTLOSS_CUDA_ARCH_LIST "{arch_list if with_cuda else ""}"',
        f'#define FASTLOSS_CUDA_VERSION "{cuda}"',
    ]
    header = out_dir / "fastloss_build_info.h"
    text = "\n".join(lines) + "\n"
    if not header.exists() or header.read_text() != text:
        header.write_text(text)
    # the same facts readable without loading the extension: a wheel installed beside another
    # torch says what it was built for instead of failing on an undefined symbol
    module = ROOT / "fastloss" / "_build_info.py"
    text = ('"""How fastloss._C was built (written by setup.py)."""\n\n'
            f"TORCH_VERSION = {torch.__version__!r}\n"
            f"CUDA_VERSION = {cuda!r}\n"
            f"CUDA_ARCH_LIST = {arch_list if with_cuda else ''!r}\n")
    if not module.exists() or module.read_text() != text:
        module.write_text(text)
    return out_dir


def extension_modules():
    with_cuda = want_cuda()
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCH_LIST
    if with_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    generated = write_build_info(with_cuda, arch_list)
    sources = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc").glob("*.cpp"))]
    sources += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc" / "cpu").glob("*.cpp"))]
    # -fno-math-errno: sqrt and friends set no errno, so they vectorize inside the kernels' loops
    cxx_flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"]
    kwargs = dict(include_dirs=[str(ROOT / "csrc"), str(generated)], extra_link_args=["-fopenmp"])
    if with_cuda:
        sources += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc" / "cuda").glob("*.cu"))]
        ext = CUDAExtension(
            "fastloss._C", sources,
            define_macros=[("FASTLOSS_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            **kwargs)
    else:
        ext = CppExtension("fastloss._C", sources, extra_compile_args={"cxx": cxx_flags}, **kwargs)
    print(f"fastloss: building fastloss._C with CUDA={'yes (' + arch_list + ')' if with_cuda else 'no'}")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}, with_cuda


def version_and_requirements(with_cuda: bool, torch_version: tuple[int, int]) -> tuple[str, list[str]]:
    """The version with its build tag, and the requirements pinning the torch minor version."""
    oldest = ".".join(map(str, TORCH_OLDEST))
    if BUILDING_SDIST:
        return VERSION, [f"torch>={oldest}", "numpy"]
    torch_tag = "torch{}.{}".format(*torch_version)
    if with_cuda:
        cuda = nvcc_version(os.environ["CUDA_HOME"]).replace(".", "")
        tag = f"cu{cuda}{torch_tag}"
    else:
        tag = f"cpu{torch_tag}"
    return f"{VERSION}+{tag}", ["torch=={}.{}.*".format(*torch_version), "numpy"]


torch_version = check_torch()
ext_modules, cmdclass, with_cuda = extension_modules()
version, requirements = version_and_requirements(with_cuda, torch_version)

setup(
    version=version,
    install_requires=requirements,
    packages=["fastloss", "fastloss.ops", "fastloss.kernels"],
    package_dir={"fastloss.kernels": "kernels"},
    package_data={"fastloss": ["py.typed"]},  # the type hints are part of the API (PEP 561)
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
