"""Annotation across machines on Dask distributed.

Each worker loads the model once (a worker plugin keeps it); tasks are batches of files; results
stream back to the driver, which writes them with the same resumable JSONL guarantees as a local
run (the same keys, the same refusal of lines made with other settings, the same ``retry_errors``). A
worker that dies mid-batch loses nothing: the scheduler reruns its batch elsewhere, and the driver
writes each id at most once.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from .annotate import AnnotationItem, Annotator, ResultWriter, batched, check_prompts, plan

_PLUGIN_NAME = "qwen2audio-model"


class ModelPlugin:
    """A Dask worker plugin holding one loaded model and processor per worker process."""

    name = _PLUGIN_NAME

    def __init__(self, model_dir: str, model_kwargs: dict[str, Any] | None = None,
                 generation_kwargs: dict[str, Any] | None = None, long_audio: str = "truncate",
                 logprobs: bool = False, annotator_factory: Callable[..., Annotator] | None = None):
        self.model_dir = str(model_dir)
        # builds the worker's annotator from (model, processor, generation_kwargs, long_audio, logprobs);
        # `qwen2audio eval` passes its own prompting through this
        self.annotator_factory = annotator_factory
        self.model_kwargs = dict(model_kwargs or {})
        self.generation_kwargs = dict(generation_kwargs or {})
        self.long_audio = long_audio
        self.logprobs = logprobs
        self.annotator: Annotator | None = None

    def setup(self, worker: Any) -> None:
        from .auto import AutoModelForCausalLM, AutoProcessor

        model = AutoModelForCausalLM.from_pretrained(self.model_dir, **self.model_kwargs)
        processor = AutoProcessor.from_pretrained(self.model_dir)
        factory = self.annotator_factory or Annotator
        self.annotator = factory(model, processor, self.generation_kwargs, self.long_audio, self.logprobs)

    def teardown(self, worker: Any) -> None:
        self.annotator = None


def _worker_annotator() -> Annotator:
    from distributed import get_worker

    plugin = get_worker().plugins[_PLUGIN_NAME]
    if plugin.annotator is None:
        raise RuntimeError("the qwen2audio model plugin did not load on this worker")
    return plugin.annotator


def _run_batch_on_worker(items: list[AnnotationItem], prompt: str | None) -> list[dict[str, Any]]:
    return _worker_annotator().run_batch(items, prompt)


def _settings_on_worker() -> dict[str, Any]:
    return _worker_annotator().settings()


def annotate_distributed(
    client: Any,
    model_dir: str | os.PathLike,
    items: Sequence[AnnotationItem],
    prompt: str | None,
    output: str | os.PathLike,
    batch_size: int = 4,
    model_kwargs: dict[str, Any] | None = None,
    generation_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    retries: int = 3,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    long_audio: str = "truncate",
    retry_errors: bool = False,
    logprobs: bool = False,
    annotator_factory: Callable[..., Annotator] | None = None,
) -> dict[str, int]:
    """Annotate ``items`` on the workers of ``client`` (a ``dask.distributed.Client``); the driver writes
    ``output``. Returns counts of written, failed and skipped files. ``annotator_factory`` (picklable, called
    as ``Annotator`` is) replaces the workers' Annotator, e.g. with another prompting."""
    from distributed import as_completed

    from .annotate import _progress_bar

    check_prompts(items, prompt)
    client.register_worker_plugin(ModelPlugin(str(model_dir), model_kwargs, generation_kwargs, long_audio, logprobs,
                                              annotator_factory), name=_PLUGIN_NAME)
    # The lines' keys come from a loaded model (its resolved dtype and quantization), as in a local run.
    settings = client.submit(_settings_on_worker, pure=False, retries=retries).result()
    with ResultWriter(output) as writer:
        pending = plan(writer, items, prompt, settings, retry_errors)
        counts = {"written": 0, "failed": 0, "skipped": len(items) - len(pending)}
        futures = [
            client.submit(_run_batch_on_worker, batch, prompt, pure=False, retries=retries)
            for batch in batched(pending, batch_size)
        ]
        bar = _progress_bar(len(pending), progress)
        try:
            for future in as_completed(futures):
                records = future.result()
                for record in records:
                    if record["id"] in writer.done:
                        continue  # a rerun batch may repeat ids already written
                    writer.write(record)
                    counts["failed" if "error" in record else "written"] += 1
                    if on_record:
                        on_record(record)
                bar.update(len(records))
                future.release()
        finally:
            bar.close()
    return counts
