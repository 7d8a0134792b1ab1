"""The built-in demo checkpoint: a deterministic tiny random Qwen2-Audio in exact HF layout.

Real weights cannot be downloaded on every machine, yet the main job must run end to end; this
gives it a model with the real architecture, names, vocabulary size and tokenizer (the real Qwen2
tokenizer files ship with the package, so this works from any install, in any folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import zlib
from pathlib import Path

import numpy as np

from .safetensors_writer import float32_to_bf16_bits, save_file

DEMO_CONFIG = {
    "architectures": ["Qwen2AudioForConditionalGeneration"],
    "model_type": "qwen2_audio",
    "audio_token_index": 151646,
    "ignore_index": -100,
    "vocab_size": 151649,
    "audio_config": {
        "model_type": "qwen2_audio_encoder",
        "num_mel_bins": 128,
        "max_source_positions": 1500,
        "d_model": 64,
        "encoder_layers": 2,
        "encoder_attention_heads": 4,
        "encoder_ffn_dim": 128,
    },
    "text_config": {
        "model_type": "qwen2",
        "vocab_size": 151649,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "torch_dtype": "bfloat16",
}

DEMO_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "eos_token_id": [151645, 151643],
    "pad_token_id": 151643,
    "do_sample": False,
}


def write_random_checkpoint(directory: Path, config: dict, seed: int = 0, bf16: bool = True) -> Path:
    """Random weights for every tensor ``config`` implies, with HF's names and shapes."""
    from . import _core

    directory.mkdir(parents=True, exist_ok=True)
    config_text = json.dumps(config, indent=1)
    expected = _core.expected_tensors(config_text)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in expected:
        # Each tensor's values follow from the seed and its name alone, not from the order the engine
        # lists tensors in.
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if name.endswith("norm.weight") or name.endswith("layer_norm.weight"):
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            values = 0.05 * rng.standard_normal(shape)
        tensors[name] = values.astype(np.float32)
    if bf16:
        stored = {name: float32_to_bf16_bits(values) for name, values in tensors.items()}
        save_file(stored, directory / "model.safetensors", {"format": "pt"}, bf16=set(stored))
    else:
        save_file(tensors, directory / "model.safetensors", {"format": "pt"})
    (directory / "config.json").write_text(config_text)
    (directory / "generation_config.json").write_text(json.dumps(DEMO_GENERATION_CONFIG, indent=1))
    return directory


# The tokenizer files the demo folder gets, from the package's own copy of the real Qwen2 tokenizer.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")

PREPROCESSOR_CONFIG = {
    "chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
    "hop_length": 160, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
    "padding_value": 0.0, "processor_class": "Qwen2AudioProcessor", "return_attention_mask": True,
    "sampling_rate": 16000,
}

# Bumped whenever write_random_checkpoint or demo_checkpoint writes something different for the same inputs.
DEMO_WRITER_VERSION = 3
DEMO_SEED = 0
MARKER = ".qwen2audio-demo.json"
_LEGACY_MARKER = ".complete"  # what versions before the fingerprint wrote (their folder: demo-tiny)


def demo_fingerprint() -> str:
    """A hash of everything the demo folder is made from: the writer's version, the seed, the configs and
    the bytes of the bundled tokenizer files. A folder made from anything else is stale."""
    from .tokenizer import bundled_tokenizer_dir

    digest = hashlib.sha256()
    recipe = {"writer": DEMO_WRITER_VERSION, "seed": DEMO_SEED, "config": DEMO_CONFIG,
              "generation_config": DEMO_GENERATION_CONFIG, "preprocessor_config": PREPROCESSOR_CONFIG}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    source = bundled_tokenizer_dir()
    for name in TOKENIZER_FILES:
        digest.update(name.encode() + b"\0")
        digest.update(_file_sha256(source / name).encode())
    return digest.hexdigest()


def default_demo_dir() -> Path:
    """``$XDG_CACHE_HOME/qwen2audio/demo-tiny-<fingerprint>`` (``~/.cache`` without XDG_CACHE_HOME): the
    folder's name says what it holds, so a new version or new tokenizer files never reuse an old folder."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "qwen2audio" / f"demo-tiny-{demo_fingerprint()[:16]}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_valid_demo_folder(directory: Path, fingerprint: str) -> bool:
    """True when ``directory`` holds exactly what the demo writes for ``fingerprint``: its marker names that
    fingerprint and every file it lists still has the recorded hash (a changed or missing file fails)."""
    try:
        marker = json.loads((directory / MARKER).read_text())
        files = marker["files"]
        if marker.get("fingerprint") != fingerprint or not isinstance(files, dict) or not files:
            return False
        present = {item.name for item in directory.iterdir() if item.name != MARKER}
        if present != set(files):
            return False
        return all(_file_sha256(directory / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _write_demo_folder(directory: Path, fingerprint: str) -> None:
    from .tokenizer import bundled_tokenizer_dir

    write_random_checkpoint(directory, DEMO_CONFIG, seed=DEMO_SEED)
    source = bundled_tokenizer_dir()
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, directory / name)
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=1))
    files = {item.name: _file_sha256(item) for item in sorted(directory.iterdir())}
    (directory / MARKER).write_text(json.dumps({"fingerprint": fingerprint, "writer": DEMO_WRITER_VERSION,
                                                "files": files}, indent=1))


def demo_checkpoint(directory: Path | str | None = None) -> Path:
    """Create (when needed) and return the demo checkpoint folder: random weights and the real Qwen2
    tokenizer shipped with the package.

    Without ``directory`` it lives in the user's cache, in a folder named after :func:`demo_fingerprint`.
    A folder is used only when its marker matches the fingerprint and every file still has its recorded
    hash; a stale or damaged one is rebuilt (in a temporary sibling, then swapped in, so concurrent callers
    never see half a folder). An explicit ``directory`` that exists with other content and no demo marker
    is refused rather than overwritten."""
    explicit = directory is not None
    directory = Path(directory) if explicit else default_demo_dir()
    fingerprint = demo_fingerprint()
    if not explicit:
        _remove_legacy_cache(directory.parent)
    if _is_valid_demo_folder(directory, fingerprint):
        return directory
    if explicit and directory.is_dir() and any(directory.iterdir()) and not (directory / MARKER).exists():
        raise ValueError(f"{directory} exists and is not a qwen2audio demo checkpoint folder (no {MARKER}); "
                         "refusing to overwrite it: pass an empty or new folder")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".{directory.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _write_demo_folder(staging, fingerprint)
        for _ in range(3):
            try:
                os.rename(staging, directory)  # fails when the target exists and is not empty
                break
            except OSError:
                if _is_valid_demo_folder(directory, fingerprint):
                    break  # another process finished first
                stale = Path(tempfile.mkdtemp(prefix=f".{directory.name}.stale-", dir=directory.parent))  # removed below
                try:
                    os.rename(directory, stale / "old")
                except FileNotFoundError:
                    pass
                shutil.rmtree(stale, ignore_errors=True)
        else:
            raise OSError(f"could not put the demo checkpoint in place at {directory}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _remove_legacy_cache(cache: Path) -> None:
    """Earlier versions cached the demo in ``demo-tiny``, possibly with a byte-level stand-in tokenizer that
    breaks generation; nothing reads that folder any more."""
    legacy = cache / "demo-tiny"
    if (legacy / _LEGACY_MARKER).is_file() and not (legacy / MARKER).exists():
        shutil.rmtree(legacy, ignore_errors=True)


DEMO_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please set a timer for ten minutes and remind me to call my sister.",
)


def synthesize_speech(text: str, path: Path) -> Path:
    """Speak ``text`` into a WAV file with espeak-ng; without it, write a two-tone chime instead."""
    import subprocess

    try:
        subprocess.run(["espeak-ng", "-v", "en", "-s", "160", "-w", str(path), text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        return path
    except (OSError, subprocess.SubprocessError):
        import wave

        rate = 16000
        t = np.arange(int(1.5 * rate)) / rate
        signal = 0.3 * np.sin(2 * np.pi * 523.25 * t) + 0.2 * np.sin(2 * np.pi * 659.25 * t)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes((signal * 32767).astype("<i2").tobytes())
        return path


def run_demo(model: str | None = None, workdir: str | None = None) -> int:
    """The main job end to end: load, chat (audio analysis and voice chat, streamed), annotate.

    Clips and annotations go to ``workdir`` (kept), or to a temporary folder removed at the end."""
    import time

    from .annotate import Annotator, annotate, read_manifest
    from .chat import ChatSession
    from .cli import turn_summary
    from .auto import AutoModelForCausalLM, AutoProcessor

    if model is None:
        model = str(demo_checkpoint())
        print(f"No --model or QWEN2AUDIO_MODEL: using the built-in tiny random checkpoint at {model}")
        print("(its weights are random, so its answers are noise; give a real Qwen2-Audio-7B-Instruct folder for "
              "real answers)")
    temporary = workdir is None
    work = Path(tempfile.mkdtemp(prefix="qwen2audio-demo-")) if temporary else Path(workdir)
    try:
        clips = work / "clips"
        clips.mkdir(parents=True, exist_ok=True)
        for index, sentence in enumerate(DEMO_SENTENCES):
            synthesize_speech(sentence, clips / f"clip{index}.wav")
        print(f"Synthesized {len(DEMO_SENTENCES)} spoken clips into {clips}")

        started = time.perf_counter()
        loaded_model = AutoModelForCausalLM.from_pretrained(model)
        processor = AutoProcessor.from_pretrained(model)
        print(f"Loaded {model} in {time.perf_counter() - started:.2f} s")

        generation = {"max_new_tokens": 24}
        session = ChatSession(loaded_model, processor, generation_kwargs=generation)
        for title, text, audio in (
            ("audio analysis", "What does the speaker say?", [str(clips / "clip0.wav")]),
            ("follow-up turn (KV cache reused)", "Say it again, shorter.", []),
            ("voice chat (audio only)", None, [str(clips / "clip1.wav")]),
        ):
            print(f"\n== chat: {title}")
            print(f"user> {text or ''}{' [audio: ' + ', '.join(Path(a).name for a in audio) + ']' if audio else ''}")
            print("assistant> ", end="", flush=True)
            turn_started = time.perf_counter()
            for piece in session.stream(text=text, audio=audio):
                print(piece, end="", flush=True)
            print(f"\n{turn_summary(session.last_stats, time.perf_counter() - turn_started)}")

        print("\n== annotate")
        output = work / "annotations.jsonl"
        counts = annotate(Annotator(loaded_model, processor, generation), read_manifest(clips),
                          "Transcribe the audio.", output, batch_size=2, progress=False)
        for line in output.read_text().splitlines():
            print(line)
        print(json.dumps({"output": str(output), **counts}))
        if temporary:
            print(f"(the temporary folder {work} is removed; --workdir DIR keeps the clips and annotations)")
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    return 0
