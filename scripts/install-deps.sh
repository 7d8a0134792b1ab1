#!/usr/bin/env bash
# Every system package the project needs, listed once. Idempotent: it returns at once
# when all are present, so `make demo` / `make test` stay quick on a set-up machine.
# `install-deps.sh notebook` adds Jupyter's notebook server (what `make notebook` runs).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  python3 python3-dev python3-venv python3-pip
  python3-numpy python3-pybind11 pybind11-dev python3-pytest python3-jinja2
  python3-tqdm python3-nbclient python3-nbformat python3-ipykernel python3-distributed python3-matplotlib
  python3-torch
  libdnnl-dev libsndfile1-dev libsoxr-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev libicu-dev
  clang clang-format clang-tidy libclang-rt-14-dev
  espeak-ng sox ffmpeg
  libopencc1.1 libopencc-data python3-mecab mecab-ipadic-utf8  # qwen2audio eval: yue t2s, ja-mecab BLEU
  python3-fastapi python3-uvicorn python3-multipart python3-httpx curl
)
# Node runs the official OpenAI JS client in the server tests; a Node already installed (e.g. from
# NodeSource, which bundles npm) is kept, as Debian's npm package would conflict with it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi
if [ "${1:-}" = "notebook" ]; then
  PACKAGES+=(jupyter-notebook)
fi

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

# The OpenAI client package into tests/node/node_modules (git-ignored), at the locked version.
node_client() {
  local folder; folder="$(dirname "$0")/../tests/node"
  if [ ! -f "$folder/node_modules/openai/package.json" ] && command -v npm >/dev/null; then
    (cd "$folder" && npm ci --no-audit --no-fund --loglevel=error) || echo "warning: npm could not install the OpenAI client; its test will be skipped" >&2
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  node_client
  exit 0
fi

echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
node_client
