#!/usr/bin/env bash
# Builds what tests/cuda/run_on_gpu.sh runs, portably (x86-64-v2 with run-time dispatch, since the
# GPU machine's CPU differs from the build machine's), into .devrun/ beside the project.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=build/devrun
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DQWEN2AUDIO_NATIVE=OFF -DQWEN2AUDIO_BUILD_PYTHON=OFF \
  -DQWEN2AUDIO_CUDA=ON -DQWEN2AUDIO_PYTHON_OUTPUT_DIR="$PWD/$build/py" >/dev/null
cmake --build $build --target qwen2audio_cuda_tests bench_cuda_model qwen2audio_cuda
rm -rf .devrun && mkdir -p .devrun/reference
cp $build/tests/cuda/qwen2audio_cuda_tests $build/bench_cuda_model $build/py/libqwen2audio_cuda.so .devrun/
cp -r ../shared/reference/mel ../shared/reference/tiny_model .devrun/reference/
mkdir -p .devrun/reference/tokenizer && find ../shared/reference/tokenizer -maxdepth 1 -type f -exec cp {} .devrun/reference/tokenizer/ \;
libs=$(ldd .devrun/qwen2audio_cuda_tests .devrun/bench_cuda_model | awk '/libdnnl|libOpenCL|libgomp/ {print $3}' | sort -u)
tar -cJf .devrun/libs.tar.xz -h --transform 's,.*/,,' $libs
grep -qx '/.devrun/' .git/info/exclude 2>/dev/null || echo '/.devrun/' >> .git/info/exclude
du -sh .devrun
