#!/usr/bin/env bash
# The GPU checks, run on a machine with an NVIDIA GPU from binaries built elsewhere (this
# project's build machines have nvcc but no GPU):
#
#   tests/cuda/make_gpu_bundle.sh            # here: portable build + bundle in .devrun/
#   tests/cuda/run_on_gpu.sh .devrun OUTDIR  # there: kernel and model tests, then the benchmark
#
# The bundle holds the test and benchmark executables, the backend library, the non-CUDA shared
# libraries they need (oneDNN, OpenMP) and a copy of ../shared/reference; the CUDA libraries
# (cuBLAS, cuFFT) come from the GPU machine's own toolkit.
set -uo pipefail
bundle=$(cd "${1:-.devrun}" && pwd)
out=${2:-/tmp/qwen2audio-gpu}
mkdir -p "$out" /tmp/qwen2audio-libs
tar -xJf "$bundle/libs.tar.xz" -C /tmp/qwen2audio-libs
cuda_dirs=$(find /usr/local/cuda*/lib* /usr/local/lib /opt /usr/lib -name 'libcublas.so.13' -o -name 'libcufft.so.12' \
  2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH="/tmp/qwen2audio-libs:${cuda_dirs}:${LD_LIBRARY_PATH:-}"
export QWEN2AUDIO_SHARED_REFERENCE="$bundle/reference"
export QWEN2AUDIO_CUDA_LIBRARY="$bundle/libqwen2audio_cuda.so"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Flags' | sed 's/Flags:.*\(avx512f\).*\(amx_bf16\).*/Flags: ... avx512f ... amx_bf16 .../'
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} 2>&1 | tee "$out/machine.txt"

status=0
"$bundle/qwen2audio_cuda_tests" --gtest_color=no 2>&1 | tee "$out/cuda_tests.txt" || status=1
if [ "${QWEN2AUDIO_GPU_BENCH:-1}" = 1 ]; then
  "$bundle/bench_cuda_model" --folder /tmp/qwen2audio-synthetic --decoder-layers "${QWEN2AUDIO_BENCH_DECODER_LAYERS:-32}" \
    --cpu-threads "$(nproc)" 2>&1 | tee "$out/bench_cuda.txt" || status=1
fi
exit $status
