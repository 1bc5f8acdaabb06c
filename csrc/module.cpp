// The Python module fastloss._C: loading it registers the ops; it also reports build facts.
#include <torch/extension.h>

#include "cpu/cpu_common.h"
#include "fastloss_build_info.h"

namespace fastloss::cpu {
const char* isa_name();
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastloss compiled kernels (C++ CPU, and CUDA when built with it)";
#ifdef FASTLOSS_WITH_CUDA
  m.attr("cuda_compiled") = true;
  m.attr("cuda_version") = FASTLOSS_CUDA_VERSION;
#else
  m.attr("cuda_compiled") = false;
  m.attr("cuda_version") = pybind11::none();
#endif
  m.attr("cuda_arch_list") = FASTLOSS_CUDA_ARCH_LIST;
  m.attr("torch_version") = FASTLOSS_TORCH_VERSION;
  m.def("cpu_isa", [] { return std::string(fastloss::cpu::isa_name()); },
        "Instruction set the CPU kernels run with on this machine.");
  m.def("output_cache_blocks", [] { return fastloss::cpu::OutputBlockCache::instance().block_sizes(); },
        "Sizes in bytes of the free blocks in the CPU output cache, in the order returned.");
  m.def("output_cache_info", [] {
        const auto info = fastloss::cpu::OutputBlockCache::instance().info();
        return pybind11::make_tuple(info.blocks, info.bytes, info.limit);
      },
        "(free blocks, their bytes, the limit in bytes) of the CPU output cache.");
  m.def("output_cache_release", [] { return fastloss::cpu::OutputBlockCache::instance().release_free(); },
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "Returns the CPU output cache's free blocks to the OS; the bytes released.");
}
