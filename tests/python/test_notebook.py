"""notebooks/quickstart.ipynb runs top to bottom on the demo checkpoint, on the kernel it names, and shows
its spectrogram."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from qwen2audio.demo import demo_checkpoint  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = PROJECT_ROOT / "notebooks" / "quickstart.ipynb"


def _kernel_command() -> list[str]:
    """The kernel registration command of the Makefile's set-up (`make kernel`, part of `make setup`)."""
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    [line] = [line.strip() for line in makefile.splitlines() if "ipykernel install" in line]
    assert line.startswith("$(PYTHON) -m ipykernel install --sys-prefix ")
    return line.split(" ", 1)[1]  # what follows $(PYTHON)


def test_setup_registers_the_notebooks_kernel() -> None:
    kernelspec = nbformat.read(NOTEBOOK, as_version=4).metadata.kernelspec
    command = _kernel_command()
    assert f"--name {kernelspec['name']} " in command and kernelspec["name"] != "python3"
    assert f'--display-name "{kernelspec["display_name"]}"' in command
    dry_run = subprocess.run(["make", "-n", "-B", "setup"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert "ipykernel install" in dry_run.stdout, dry_run.stderr


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = demo_checkpoint(tmp_path / "model")
    monkeypatch.setenv("QWEN2AUDIO_MODEL", str(model))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Register the notebook's kernel for this interpreter (the project's venv) as `make setup` does, under
    # a prefix of its own, and run the notebook on the kernel it names.
    prefix = tmp_path / "prefix"
    command = _kernel_command().replace("--sys-prefix", f"--prefix {prefix}")
    result = subprocess.run([sys.executable, *shlex.split(command)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    kernel = json.loads((prefix / "share" / "jupyter" / "kernels" / notebook.metadata.kernelspec["name"]
                         / "kernel.json").read_text())
    assert kernel["argv"][0] == sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    client = nbclient.NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert client.kernel_name == notebook.metadata.kernelspec["name"]

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [output for cell in code_cells for output in cell.get("outputs", [])]
    text = "\n".join(output.get("text", "") for output in outputs)
    assert "loaded" in text
    assert "pieces streamed" in text
    assert not any(output.get("output_type") == "error" for output in outputs)
    [spectrogram] = [cell for cell in code_cells if "imshow" in cell.source]
    images = [output for output in spectrogram.outputs if "image/png" in output.get("data", {})]
    assert len(images) == 1, spectrogram.outputs
    assert len(images[0]["data"]["image/png"]) > 1000  # base64 of a real picture
