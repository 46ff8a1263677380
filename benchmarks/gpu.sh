#!/usr/bin/env bash
# Every GPU figure the issues ask for, written under benchmarks/results/ (and copied to
# $OUT when that is set, as on the lent device machine).
#
# Runs on a machine whose python3 already has JAX with CUDA, flax and optax (the lent
# H100's image has them; nothing can be installed from the network there). Wheels found in
# .whl/ are installed first: the H100 image lacks gin-config, so fetch it beside the repo
# with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl gin-config==0.5.0
#
# Usage: benchmarks/gpu.sh [optimizer] [train] [kernels]   (no stage: all three)
#   optimizer  benchmarks/optimizer_step.py --gpu   (issue 3: GPT-2-small Muon update, bf16)
#   train      benchmarks/train_step.py --gpu, with adamw and with muon (MFU, issue 2)
#   kernels    benchmarks/kernels.py               (issue 8: Pallas NS, block-sparse matmul)
set -euo pipefail
cd "$(dirname "$0")/.."
results=benchmarks/results
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(optimizer train kernels)
for stage in "${stages[@]}"; do
  case $stage in optimizer|train|kernels) ;; *)
    echo "gpu.sh: unknown stage '$stage'; valid: optimizer train kernels" >&2; exit 2 ;;
  esac
done

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/jaxlab-site .whl/*.whl
  export PYTHONPATH=/tmp/jaxlab-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c 'import jax, flax, optax, gin; print("python3 has jax", jax.__version__, "flax",
flax.__version__, "optax", optax.__version__, "on", jax.devices())'

for stage in "${stages[@]}"; do
  echo "== $stage"
  case $stage in
    optimizer)
      python3 benchmarks/optimizer_step.py --gpu --out $results/optimizer_step_gpu.txt ;;
    train)
      python3 benchmarks/train_step.py --gpu --out $results/train_step_gpu.txt
      python3 benchmarks/train_step.py --gpu --optimizer muon \
        --out $results/train_step_gpu_muon.txt ;;
    kernels)
      python3 benchmarks/kernels.py --out $results/kernels_gpu.json ;;
  esac
done
if [ -n "${OUT:-}" ]; then
  cp $results/*_gpu*.txt $results/*_gpu*.json "$OUT"/ 2> /dev/null || true
fi
