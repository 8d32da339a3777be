#!/usr/bin/env bash
# One prepared check for a lent GPU machine (offline; python3 there has CuPy, Numba, SciPy, h5py, pytest).
#
# Stages, each with its own time limit and its exit code recorded in $OUT/stages.tsv:
#   gpu      nvidia-smi: the card's model, driver and memory            -> $OUT/gpu.txt
#   install  carried wheels (.whl/, made by ../shared/tools/device-wheels.sh sigpy threadpoolctl) and mrirecon itself
#            into a target dir put first on PYTHONPATH                    -> $OUT/install.log
#   pytest   pytest -m gpu                                                 -> $OUT/pytest_gpu.log, .xml
#   bench    scripts/benchmark.py --quick --device cuda --problems P1,P3,P2 (beside SigPy on CuPy when
#            carried; P2 last: SigPy's 16-slice loop is the longest, and every row is in the JSON as it is
#            measured)                                                     -> $OUT/bench_gpu.log, .json
#   p2full   P2 with all 160 slices, mrirecon alone (--quick extrapolates a 16-slice batch x10, an upper
#            bound for a batched solve; the <= 1 s target needs the whole volume)  -> $OUT/p2full_gpu.log, .json
#   bench3d  the same with --problems P2L1: the 3D L1-wavelet exam (P2's volume, 100 FISTA iterations;
#            SigPy on CuPy does 10, x10)                                   -> $OUT/bench3d_gpu.log, .json
# A failing stage does not stop the later ones; the script exits with the first non-zero stage code.
# Python runs with -P where the working directory would otherwise come first on sys.path: the source
# folder ./mrirecon lacks kernels/ and pipelines/, which only the installed copy has inside it.
#
# Run from the repository root, e.g. through the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Time limits (seconds): gpu 20, install 80, PYTEST_TIMEOUT 120, BENCH_TIMEOUT 170, P2FULL_TIMEOUT 60,
# BENCH3D_TIMEOUT 120: at most 570 s in all, inside the device tool's 600 s per command. BENCH_REPEATS (default 3) and BENCH3D_REPEATS
# (default 2: a SigPy run of the exam takes tens of seconds) set the timed runs, after one warm-up each.
set -u

OUT="${OUT:-$PWD/gpu_check_out}"
SITE="${SITE:-/tmp/mrirecon-site}"
PY="${PYTHON:-python3}"
PYTEST_TIMEOUT="${PYTEST_TIMEOUT:-120}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-170}"
BENCH_REPEATS="${BENCH_REPEATS:-3}"
P2FULL_TIMEOUT="${P2FULL_TIMEOUT:-60}"
BENCH3D_TIMEOUT="${BENCH3D_TIMEOUT:-120}"
BENCH3D_REPEATS="${BENCH3D_REPEATS:-2}"
mkdir -p "$OUT" "$SITE"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
printf 'stage\trc\tseconds\n' > "$OUT/stages.tsv"
first_failure=0

# stage NAME LIMIT_S LOG COMMAND...: run COMMAND under a hard time limit, log stdout+stderr, record rc.
stage() {
  local name=$1 limit=$2 log=$3
  shift 3
  local start rc
  start=$(date +%s)
  echo "=== $name (limit ${limit}s) ===" | tee -a "$log"
  timeout -k 10 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$OUT/stages.tsv"
  [ "$rc" -eq 124 ] && echo "$name: timed out after ${limit}s" | tee -a "$log"
  echo "=== $name rc=$rc ===" | tee -a "$log"
  [ "$rc" -ne 0 ] && [ "$first_failure" -eq 0 ] && first_failure=$rc
  return 0
}

install_all() {
  if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      || return $?
  else
    echo "no carried wheels in .whl/: SigPy and the packages the GPU image lacks will be missing"
  fi
  # mrirecon itself (package-dir maps kernels/ and pipelines/ into it); copy the tree if pip cannot build.
  if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$SITE" .; then
    echo "pip could not build mrirecon here; copying the package tree instead"
    rm -rf "$SITE/mrirecon" && cp -r mrirecon "$SITE/mrirecon" && cp -r kernels "$SITE/mrirecon/kernels" \
      && cp -r pipelines "$SITE/mrirecon/pipelines" || return $?
  fi
  "$PY" -P - <<'EOF'
import importlib
for name in ("mrirecon", "cupy", "numba", "scipy", "h5py", "sigpy", "dask", "zarr", "nibabel", "threadpoolctl"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')} {getattr(module, '__file__', '')}")
    except Exception as exc:
        print(f"{name} MISSING ({type(exc).__name__}: {exc})")
import cupy
print("cupy sees", cupy.cuda.runtime.getDeviceCount(), "GPU(s)")
EOF
}

stage gpu 20 "$OUT/gpu.txt" nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
export -f install_all
export PY SITE
stage install 80 "$OUT/install.log" bash -c install_all
stage pytest "$PYTEST_TIMEOUT" "$OUT/pytest_gpu.log" \
  "$PY" -P -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml" tests
stage bench "$BENCH_TIMEOUT" "$OUT/bench_gpu.log" \
  "$PY" scripts/benchmark.py --quick --device cuda --problems P1,P3,P2 --repeats "$BENCH_REPEATS" \
  --json "$OUT/bench_gpu.json"
stage p2full "$P2FULL_TIMEOUT" "$OUT/p2full_gpu.log" \
  "$PY" scripts/benchmark.py --device cuda --problems P2 --no-peers --repeats "$BENCH_REPEATS" \
  --json "$OUT/p2full_gpu.json"
stage bench3d "$BENCH3D_TIMEOUT" "$OUT/bench3d_gpu.log" \
  "$PY" scripts/benchmark.py --quick --device cuda --problems P2L1 --repeats "$BENCH3D_REPEATS" \
  --json "$OUT/bench3d_gpu.json"

echo "--- GPU ---"; cat "$OUT/gpu.txt"
echo "--- stages ---"; cat "$OUT/stages.tsv"
echo "--- pytest ---"; tail -n 15 "$OUT/pytest_gpu.log"
echo "--- benchmark (P1, P3, P2) ---"; tail -n 30 "$OUT/bench_gpu.log"
echo "--- benchmark (P2, all 160 slices, mrirecon) ---"; tail -n 6 "$OUT/p2full_gpu.log"
echo "--- benchmark (P2L1, 3D L1-wavelet exam) ---"; tail -n 12 "$OUT/bench3d_gpu.log"
exit "$first_failure"
