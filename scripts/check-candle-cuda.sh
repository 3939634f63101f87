#!/usr/bin/env bash
# Compiles the `candle-cuda` feature (the candle op's `cuda_fwd` and the runtime's CUDA
# backend linked beside candle's `cuda` feature) on a machine without a GPU or CUDA toolkit:
# clippy over the library, tests and examples, then the library's object code.
#
# Candle's `cuda` feature compiles its kernels with nvcc in a build script, so this installs
# nvcc and the headers it needs from pip (CUDA 13.0: nvidia-cuda-nvcc, -crt, -runtime, -cccl
# and nvidia-nvvm; about 100 MB) into target/cuda13 and checks the library and the tests in a
# target directory of their own. It links nothing (that needs libcuda, cuBLAS and cuRAND) and
# runs nothing: scripts/gpu-check.sh does, on a machine with a GPU.
#
#   bash scripts/check-candle-cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."

toolkit="$PWD/target/cuda13"
cuda_root="$toolkit/nvidia/cu13"
if [ ! -x "$cuda_root/bin/nvcc" ] || [ ! -x "$cuda_root/nvvm/bin/cicc" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$toolkit" \
        "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" \
        "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85"
fi
"$cuda_root/bin/nvcc" --version | tail -2

# candle-kernels asks nvidia-smi for the compute capability unless told; cudarc finds the
# toolkit through CUDA_ROOT.
export PATH="$cuda_root/bin:$PATH" CUDA_ROOT="$cuda_root" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CARGO_TARGET_DIR="$PWD/target/candle-cuda"
cargo clippy -p sata -p sata-runtime --no-default-features --features sata/candle-cuda,sata/wgpu --lib --tests --examples -- -D warnings
cargo build -p sata --no-default-features --features candle-cuda,wgpu --lib
echo "check-candle-cuda: the candle-cuda feature compiles (library built, nothing linked or run)"
