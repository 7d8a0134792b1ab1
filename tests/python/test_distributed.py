"""Annotation on a Dask LocalCluster of two worker processes, one of them killed mid-run."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from qwen2audio.annotate import SettingsChangedError, read_manifest  # noqa: E402
from qwen2audio.demo import demo_checkpoint  # noqa: E402
from qwen2audio.distributed import annotate_distributed  # noqa: E402


def test_worker_killed_mid_run_loses_no_file(tmp_path: Path, sine_wav) -> None:
    model = demo_checkpoint(tmp_path / "model")
    clips = tmp_path / "clips"
    clips.mkdir()
    for index in range(12):
        sine_wav(clips / f"clip{index:02d}.wav", 0.3 + 0.05 * index, 200 + 50 * index)
    items = read_manifest(clips)
    output = tmp_path / "out.jsonl"

    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the worker processes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        worker_pids = list(client.run(os.getpid).values())
        assert len(worker_pids) == 2
        killed: list[int] = []

        def kill_one_worker(record: dict) -> None:
            if not killed:
                os.kill(worker_pids[0], signal.SIGKILL)
                killed.append(worker_pids[0])

        counts = annotate_distributed(client, model, items, "Describe the sound.", output, batch_size=2,
                                      generation_kwargs={"max_new_tokens": 3}, progress=False,
                                      on_record=kill_one_worker)
    assert killed, "a worker must have been killed during the run"
    records = [json.loads(line) for line in output.read_text().splitlines()]
    ids = [record["id"] for record in records]
    assert sorted(ids) == sorted(item.id for item in items)  # every file exactly once
    assert all("answer" in record for record in records), [r for r in records if "error" in r]
    assert counts["written"] == 12

    # A rerun with the same settings finds everything done; with other generation settings it refuses
    # rather than skip lines made differently.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        again = annotate_distributed(client, model, items, "Describe the sound.", output,
                                     generation_kwargs={"max_new_tokens": 3}, progress=False)
        assert again == {"written": 0, "failed": 0, "skipped": 12}
        with pytest.raises(SettingsChangedError, match="generation settings"):
            annotate_distributed(client, model, items, "Describe the sound.", output, progress=False)
