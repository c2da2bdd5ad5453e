#!/usr/bin/env bash
# The suite's GPU part on one machine, in under 8 minutes on one H100/H200-class GPU (benchmarks/gpu.py):
# a 124M-parameter bf16 transformer's MFU, K = 1/4/16 batched small runs vs sequential, Muon/Scion
# overhead, and a sharded step over every device. Each part runs in its own process under its own
# timeout; a part that fails or times out is reported and the others still run.
#
#   benchmarks/gpu.sh            # on the GPU machine (from any directory)
#   benchmarks/gpu.sh --smoke    # tiny sizes on whatever device there is (the CPU dry run the tests use)
#
# Python: $PYTHON, else .venv/bin/python, else python3. When it cannot import jax and scaling, the script
# makes a venv ($VENV, default /tmp/scaling-gpu-venv, seeing the system's packages) and pip-installs the
# project; when JAX sees no GPU it installs "jax[cuda12]" (then "jax[cuda13]") of the same version.
# Without a GPU after that it says so, writes gpu_env.json and exits 3 (never a CI dependency: CI runs
# only --smoke).
# Results: $OUT/gpu_<part>.json (/tmp/scaling-gpu-parts/ without $OUT), combined into
# $OUT/gpu_results.json and (not --smoke) benchmarks/results/<machine>-gpu.json.
set -u
cd "$(dirname "$0")/.."
SMOKE=""
[ "${1:-}" = "--smoke" ] && SMOKE="--smoke"
DIR="${OUT:-/tmp/scaling-gpu-parts}"
mkdir -p "$DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
say() { echo "[gpu.sh +$(( $(date +%s) - T0 ))s] $*"; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import jax, optax, flax, scaling" >/dev/null 2>&1; then
  VENV="${VENV:-/tmp/scaling-gpu-venv}"
  say "$PY cannot import jax + scaling: installing the project into $VENV"
  python3 -m venv --system-site-packages "$VENV" && PY="$VENV/bin/python"
  timeout 180 "$PY" -m pip install -q -e . || say "pip install -e . failed (no package registry?)"
fi
if [ -z "$SMOKE" ] && ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" >/dev/null 2>&1; then
  JV=$("$PY" -c "import jax; print(jax.__version__)" 2>/dev/null || echo "")
  for EXTRA in cuda12 cuda13; do  # the CUDA plugin wheels of this jax version
    say "JAX sees no GPU: installing jax[$EXTRA]${JV:+==$JV}"
    timeout 180 "$PY" -m pip install -q "jax[$EXTRA]${JV:+==$JV}" || { say "pip install jax[$EXTRA] failed"; continue; }
    "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" >/dev/null 2>&1 && break
  done
fi

BUDGET_END=$(( $(date +%s) + ${GPU_SH_BUDGET:-460} ))  # the parts' total, from here (installs excluded)
run_part() {  # name, timeout seconds (cut to what is left of the budget)
  local left=$(( BUDGET_END - $(date +%s) )) limit=$2
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then say "part $1 skipped: budget spent"; return 124; fi
  say "part $1 (timeout $limit s)"
  timeout --kill-after=10 "$limit" "$PY" -m benchmarks.gpu "$1" $SMOKE --out-dir "$DIR"
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "part $1 timed out after $limit s"; fi
  return $rc
}

run_part env 60
rc=$?
if [ $rc -eq 3 ]; then
  say "NO GPU: JAX found none (see $DIR/gpu_env.json); nothing measured"
  exit 3
fi
if [ -n "$SMOKE" ]; then
  for p in mfu batched optim sharded; do run_part $p 120; done
else
  run_part mfu 180
  run_part batched 120
  run_part optim 60
  run_part sharded 90
fi
"$PY" -m benchmarks.gpu collect --out-dir "$DIR" $SMOKE
say "done: $DIR/gpu_results.json$([ -z "$SMOKE" ] && echo ' and benchmarks/results/<machine>-gpu.json')"
