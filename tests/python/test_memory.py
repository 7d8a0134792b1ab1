"""A bf16 checkpoint is used in place from its memory map: loading one costs almost no resident memory
(pages are mapped, not read), a forward pass brings at most the file's size in, and deleting the model
gives it all back. bench/bench_memory.py shows the same on a several-GB checkpoint with 7B shapes;
here its small preset (~190 MB) runs, each measurement in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bf16_checkpoint_is_mapped_not_copied(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_memory.py"), "--preset", "small", "--dir", str(tmp_path / "ckpt"),
         "--json"],
        capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert result.stdout, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    size = figures["file_bytes"]
    assert 150 << 20 < size < 250 << 20
    ours = figures["ours"]
    stages = ours["stages"]
    base = stages["baseline"]["VmRSS"]

    assert ours["dtype"] == "bfloat16"
    # The whole file is mapped once the model is loaded (which also shows the /proc reading finds it).
    assert size <= stages["loaded"]["CheckpointMapped"] < size + (1 << 20)
    # Every matrix is used from the mapping; only small vectors (norms, biases) may be converted.
    assert ours["mapped_weight_bytes"] > 0.95 * size
    assert ours["copied_weight_bytes"] < 0.02 * size
    # Loading reads the header, not the weights.
    assert stages["loaded"]["VmRSS"] - base < 0.25 * size
    # A forward pass touches every weight matrix (the embedding table only in the prompt's rows): the
    # mapping's pages become resident, and nothing more than the file (plus activations) is ever held.
    assert stages["loaded"]["Checkpoint"] < 0.02 * size
    assert stages["forward"]["Checkpoint"] > 0.5 * size
    assert max(stages["loaded"]["VmHWM"], stages["forward"]["VmHWM"]) - base <= 1.10 * size
    assert figures["peak_within_size_plus_10pct"]
    # The copying baseline holds the whole file as anonymous memory: the contrast the mapping avoids.
    copy = figures["copy"]["stages"]
    assert copy["loaded"]["VmRSS"] - copy["baseline"]["VmRSS"] > 0.95 * size
    # Deleting the model unmaps the file at once; the rest is glibc's cache of freed heap blocks
    # (activations), which malloc_trim hands back. What stays is the runtime's one-time cost (oneDNN's
    # kernels, the OpenMP threads, library code paged in), the same for any model size and number of
    # models: a second model loaded, run and deleted adds nothing to it.
    assert stages["released"]["CheckpointMapped"] == 0  # no mapping of the file left in /proc/self/smaps
    assert stages["released"]["Checkpoint"] == 0
    assert stages["trimmed"]["VmRSS"] - base < 0.5 * (stages["forward"]["VmRSS"] - base)
    assert stages["second_model_trimmed"]["VmRSS"] - stages["trimmed"]["VmRSS"] < 0.02 * size
    assert stages["second_model_trimmed"]["CheckpointMapped"] == 0
