"""Builds the C++ core through CMake; metadata lives in pyproject.toml."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        expected_path = Path(self.get_ext_fullpath(ext.name)).resolve()
        # Editable installs load the package from python/, so the module is built there, at a path
        # that stays fixed; `make build` can then rebuild it with CMake alone.
        editable = getattr(self, "editable_mode", False) or self.inplace
        output_dir = ROOT / "python" / "qwen2audio" if editable else expected_path.parent
        # One persistent build folder, shared with `make test`, so reinstalling is incremental.
        build_dir = Path(os.environ.get("QWEN2AUDIO_BUILD_DIR", ROOT / "build" / "release"))
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=" + os.environ.get("QWEN2AUDIO_BUILD_TYPE", "Release"),
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DQWEN2AUDIO_PYTHON_OUTPUT_DIR={output_dir}",
        ]
        configure += [arg for arg in os.environ.get("QWEN2AUDIO_CMAKE_ARGS", "").split() if arg]
        subprocess.run(configure, check=True)
        targets = ["_core"]
        # The optional CUDA backend (a library beside the module, opened only for device="cuda")
        # exists when CMake found nvcc.
        listing = subprocess.run(["ninja", "-C", str(build_dir), "-t", "targets", "all"], check=True,
                                 capture_output=True, text=True).stdout
        if any(line.startswith("qwen2audio_cuda:") for line in listing.splitlines()):
            targets.append("qwen2audio_cuda")
        subprocess.run(["cmake", "--build", str(build_dir), "--target", *targets], check=True)
        built = output_dir / expected_path.name
        if built != expected_path:
            expected_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built, expected_path)
            backend = output_dir / "libqwen2audio_cuda.so"
            if "qwen2audio_cuda" in targets:
                shutil.copy2(backend, expected_path.parent / backend.name)


setup(ext_modules=[CMakeExtension("qwen2audio._core")], cmdclass={"build_ext": CMakeBuild})
