#!/usr/bin/env bash
# The CUDA path's checks on a lent GPU machine, in one unattended run of a few minutes:
#
#   bash benchmarks/gpu_check.sh          # from the repo root; logs and results go to $OUT
#
# That machine has torch with CUDA but no network: what it lacks comes in .device/ (carried,
# git-ignored): wheels (.device/wheels/*.whl: safetensors, pyyaml, psutil, platformdirs) and,
# optionally, the extension built here against the same torch (.device/_C.*.so, see
# docs/benchmarks.md for how); without it, or if it does not load, the extension is built there
# (CXX=/usr/bin/g++, sm_90 only). Then: the CUDA tests, then benchmarks/bench_cuda.py. Each
# stage is time-boxed and logged, and a failing stage does not stop the next.
set -u
OUT=${OUT:-/tmp/saefast-gpu}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONPATH=$PWD
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"

stamp "wheels"
for w in .device/wheels/*.whl; do  # one at a time: wheels for other Pythons just fail
  python -m pip install --no-index --no-deps -q "$w" > /dev/null 2>&1 && echo "installed ${w##*/}"
done

stamp "extension"
ok() { python -c "import saefast, sys; i = saefast.build_info(); print(i.get('cuda_kernels'), i.get('reason')); sys.exit(0 if i.get('cuda_kernels') else 1)"; }
cp .device/_C.*.so saefast/ 2>/dev/null
if ! ok; then
  rm -f saefast/_C.*.so
  stamp "building (no usable carried build)"
  CXX=/usr/bin/g++ TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 timeout 300 python setup.py build_ext --inplace > "$OUT/build.txt" 2>&1
  tail -5 "$OUT/build.txt"
  ok || { stamp "no CUDA kernels: stopping"; exit 1; }
fi

stamp "tests"
TESTS=${TESTS:-tests/test_cuda.py tests/test_topk_encode.py tests/test_sparse_decode.py \
  tests/test_cosine_topk.py tests/test_ops.py tests/test_sync_free.py tests/test_trainer.py \
  tests/test_cuda_graphs.py}
timeout 170 python -m pytest -q -p no:cacheprovider --durations=8 $TESTS > "$OUT/pytest.txt" 2>&1
echo "pytest exit $?"; tail -40 "$OUT/pytest.txt"

stamp "benchmarks"
# most telling first: the graphed step and training, a sweep's pass, then the ops
SECTIONS=${SECTIONS:-step,train,sweep,encode,decode,cosine,profile}
timeout 330 python benchmarks/bench_cuda.py --sections $SECTIONS --json "$OUT/bench_cuda.json" \
  --budget-s ${BENCH_BUDGET_S:-250}
stamp "done"
