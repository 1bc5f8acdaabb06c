"""`python -m fastloss`: the version, how the extension was built, which backends work here."""

import importlib.metadata
import platform

import torch

from . import __version__, _backend, cache


def main() -> None:
    try:  # the installed build's version carries its tag (0.1.0+cu130torch2.14)
        version = importlib.metadata.version("fastloss")
    except importlib.metadata.PackageNotFoundError:
        version = __version__
    print(f"fastloss {version}  (python {platform.python_version()}, torch {torch.__version__})")
    ext = _backend.extension()
    if ext is None:
        print(f"extension fastloss._C: not loaded ({_backend.extension_error()})")
    else:
        print("extension fastloss._C: built")
        print(f"  built against torch {ext.torch_version}")
        print(f"  CPU kernels: {ext.cpu_isa()}")
        if ext.cuda_compiled:
            print(f"  CUDA kernels: CUDA {ext.cuda_version}, arch list {ext.cuda_arch_list}")
        else:
            print("  CUDA kernels: not compiled")
        limit = cache.cache_info().limit
        print("CPU output cache: " + (f"up to {limit >> 20} MiB (FASTLOSS_OUTPUT_CACHE_MB)" if limit
                                      else "off (FASTLOSS_OUTPUT_CACHE_MB=0)"))
    if _backend.triton_found():
        import triton

        mode = "interpreter (TRITON_INTERPRET=1)" if _backend.triton_interpreting() else "compiled"
        print(f"triton {triton.__version__}: {mode}")
    else:
        print("triton: not installed")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"GPU: {gpu}")
    print("backends that run here: " + ", ".join(k for k, ok in _backend.available().items() if ok))
    source = " (from FASTLOSS_BACKEND)" if _backend.from_environment() else ""
    print(f"default backend: {_backend.DEFAULT_BACKEND}{source}")


if __name__ == "__main__":
    main()
