#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver: runs the CUDA backend's tests against the real
# GPU (the same tests CI runs on the host execution of the kernels), the NVRTC resource
# checks, and the CUDA benchmarks, and writes the results with the device, date and commands
# to benches/results/cuda-<date>.md. Commit that file.
#
#   bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU and driver here (nvidia-smi failed)" >&2
    exit 1
fi

# NVRTC as .ci/run installs it (the driver comes with the machine).
nvrtc_version="12.9.86"
nvrtc_dir="$PWD/target/nvrtc"
nvrtc_lib="$nvrtc_dir/nvidia/cuda_nvrtc/lib"
if [ ! -e "$nvrtc_lib/libnvrtc.so.12" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$nvrtc_dir" "nvidia-cuda-nvrtc-cu12==$nvrtc_version"
fi
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

date="$(date -u +%Y-%m-%d)"
out="benches/results/cuda-$date.md"
mkdir -p benches/results
gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
log="$(mktemp)"

# The cuda_gpu instance of every backend suite (correctness against float64 on every registry
# kernel and d_k != d_v, P = 1..6; resident states, checkpoints, wide shapes, compensated
# states; API errors), the continuation across every backend pair, and the NVRTC resource
# checks. SATA_CUDA_EXECUTOR=gpu makes a missing GPU a failure instead of a skip.
tests="SATA_CUDA_EXECUTOR=gpu cargo test --release --test correctness --test backend_suite --test api_errors cuda_gpu; SATA_CUDA_EXECUTOR=gpu cargo test --release --test backend_suite states_continue_on_every_other_backend; cargo test --release --test cuda_nvrtc"
bench="cargo bench --bench cuda"
status=0
{
    env SATA_CUDA_EXECUTOR=gpu cargo test --release --test correctness --test backend_suite \
        --test api_errors cuda_gpu &&
        env SATA_CUDA_EXECUTOR=gpu cargo test --release --test backend_suite \
            states_continue_on_every_other_backend &&
        cargo test --release --test cuda_nvrtc
} 2>&1 | tee "$log" || status=$?
results="$(grep -E '^(test result|     Running|failures:|    [a-z_:]+$)' "$log" || true)"

# The candle op on CUDA tensors (feature `candle-cuda`) needs a CUDA toolkit to build and
# cuBLAS/cuRAND to link, which a bare GPU machine may not have.
candle="skipped: no nvcc on PATH (the candle-cuda feature needs a CUDA toolkit)"
if command -v nvcc >/dev/null 2>&1; then
    cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)"
    if CUDA_COMPUTE_CAP="$cap" cargo test --release --no-default-features --features candle-cuda \
        --test candle_op 2>&1 | tee "$log"; then
        candle="passed"
    else
        candle="FAILED (see the log above)"
        status=1
    fi
    candle="$candle: $(grep -E '^test result' "$log" | tail -1)"
fi

cargo bench --bench cuda 2>&1 | tee "$log"
table="$(sed -n '/^## CUDA decode/,$p' "$log")"

{
    echo "# CUDA backend on $gpu"
    echo
    echo "- date: $date (UTC), commit $commit, host $(hostname)"
    echo "- tests: \`$tests\` (exit status $status)"
    echo "- candle op on CUDA tensors (\`cargo test --release --no-default-features --features candle-cuda --test candle_op\`): $candle"
    echo "- benchmarks: \`$bench\`"
    echo
    echo '```'
    echo "$results"
    echo '```'
    echo
    echo "$table"
} >"$out"
echo "gpu-check: wrote $out"
exit "$status"
