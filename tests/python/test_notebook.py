"""notebooks/quickstart.ipynb runs top to bottom on the demo checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from qwen2audio.demo import demo_checkpoint  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = demo_checkpoint(tmp_path / "model")
    monkeypatch.setenv("QWEN2AUDIO_MODEL", str(model))
    # The kernel must be this interpreter (the project's venv), not whatever `python3` kernel the system has.
    kernel_dir = tmp_path / "jupyter" / "kernels" / "qwen2audio-test"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "qwen2audio test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="qwen2audio-test",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = {index: cell.get("outputs", []) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    text = "\n".join(output.get("text", "") for cell_outputs in outputs.values() for output in cell_outputs)
    assert "loaded" in text
    assert "pieces streamed" in text
    assert not any(output.get("output_type") == "error" for cell_outputs in outputs.values() for output in cell_outputs)
