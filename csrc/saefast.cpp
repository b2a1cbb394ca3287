// saefast op library: every op schema in one TORCH_LIBRARY block, plus build_info().
//
// The schema strings live in saefast/ops/schemas.inc (shared with Python, see that file), so
// this library defines working ops when loaded on its own (torch.ops.load_library on the
// CMake build) and Python defines the same ones when it is not built (saefast/ops/library.py).
// Kernels are registered elsewhere, one op family a file:
//   csrc/cpu/<op>.cpp   TORCH_LIBRARY_IMPL(saefast, CPU, m)  { m.impl("<op>", &<op>_cpu); }
//   csrc/cuda/<op>.cpp  TORCH_LIBRARY_IMPL(saefast, CUDA, m) { m.impl("<op>", &<op>_cuda); }
//                       (thin torch glue; the kernel bodies are plain CUDA in csrc/cuda/*.cu)
// Any device without a native kernel runs saefast/ops/reference.py, registered from Python
// (saefast/ops/<op module>.py) under CompositeExplicitAutograd, which a backend kernel
// overrides; the fake kernels and autograd formulas are Python's too.

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/version.h>

#ifdef SAEFAST_WITH_CUDA
#include <cuda.h>
#endif

#include <sstream>
#include <string>
#include <vector>

#include "cpu/tiles.h"

namespace saefast {
namespace {

const char* const kSchemas[] = {
#include "../saefast/ops/schemas.inc"
};

std::string op_name(const std::string& schema) {
  return schema.substr(0, schema.find('('));
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Names of saefast ops with a kernel registered directly for `key` (not via a Composite
// alias), i.e. the native kernels linked into this build.
std::string kernels_for(c10::DispatchKey key) {
  std::string out = "[";
  bool first = true;
  for (const char* schema : kSchemas) {
    const std::string name = op_name(schema);
    auto op = c10::Dispatcher::singleton().findOp(
        c10::OperatorName("saefast::" + name, ""));
    if (op.has_value() && op->hasKernelForDispatchKey(key)) {
      out += (first ? "" : ", ") + json_string(name);
      first = false;
    }
  }
  return out + "]";
}

std::string build_info() {
#ifdef SAEFAST_WITH_CUDA
  const bool cuda = true;
  const std::string cuda_version = json_string(
      std::to_string(CUDA_VERSION / 1000) + "." + std::to_string(CUDA_VERSION % 1000 / 10));
#else
  const bool cuda = false;
  const std::string cuda_version = "null";
#endif
#ifdef _OPENMP
  const bool openmp = true;
#else
  const bool openmp = false;
#endif
#if defined(__clang__)
  const std::string compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  const std::string compiler = "gcc " __VERSION__;
#elif defined(_MSC_VER)
  const std::string compiler = "msvc " + std::to_string(_MSC_VER);
#else
  const std::string compiler = "unknown";
#endif
  std::ostringstream js;
  js << "{\"native\": true"
     << ", \"torch_version\": " << json_string(TORCH_VERSION)
     << ", \"cuda\": " << (cuda ? "true" : "false")
     << ", \"cuda_version\": " << cuda_version
     << ", \"compiler\": " << json_string(compiler)
     << ", \"openmp\": " << (openmp ? "true" : "false")
     << ", \"cpu_kernels\": " << kernels_for(c10::DispatchKey::CPU)
     << ", \"cuda_kernels\": " << kernels_for(c10::DispatchKey::CUDA)
     // the CPU kernels' GEMM blocking, which their results depend on (csrc/cpu/tiles.h)
     << ", \"cpu_tiles\": {\"max_row_block\": " << kMaxRowBlock
     << ", \"gemm_tile\": " << kGemmTile << "}}";
  return js.str();
}

}  // namespace
}  // namespace saefast

TORCH_LIBRARY(saefast, m) {
  // Fake (meta) kernels and autograd live in Python, registered through this module's
  // register() (importing it imports saefast.ops, which registers every op); torch imports it
  // when it needs a fake kernel, and checks that register_fake was called from it.
  m.set_python_module("saefast.ops.library");
  for (const char* schema : saefast::kSchemas) {
    if (saefast::op_name(schema) == "build_info") {
      m.def(schema, &saefast::build_info);
    } else {
      m.def(schema);
    }
  }
}

#ifdef SAEFAST_PYTHON_MODULE
// `import saefast._C` loads this library, which runs the registrations above. The module
// itself is empty: everything is reached through torch.ops.saefast.*.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
#endif
