"""The built-in demo checkpoint: a deterministic tiny random Qwen2-Audio in exact HF layout.

Real weights cannot be downloaded on every machine, yet the main job must run end to end; this
gives it a model with the real architecture, names and tokenizer vocabulary size.
"""

from __future__ import annotations

import json
import os
import shutil
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


def default_demo_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "qwen2audio" / "demo-tiny"


def write_random_checkpoint(directory: Path, config: dict, seed: int = 0, bf16: bool = True) -> Path:
    """Random weights for every tensor ``config`` implies, with HF's names and shapes."""
    from . import _core

    directory.mkdir(parents=True, exist_ok=True)
    config_text = json.dumps(config, indent=1)
    expected = _core.expected_tensors(config_text)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in expected:
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


TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json")


def find_reference_tokenizer() -> Path | None:
    """The real Qwen2 tokenizer files from the project's shared reference data, when reachable."""
    candidates = []
    if os.environ.get("QWEN2AUDIO_REFERENCE_DIR"):
        candidates.append(Path(os.environ["QWEN2AUDIO_REFERENCE_DIR"]) / "tokenizer")
    candidates.append(Path.cwd().parent / "shared" / "reference" / "tokenizer")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "reference" / "tokenizer")
    for candidate in candidates:
        if (candidate / "vocab.json").is_file() and (candidate / "merges.txt").is_file():
            return candidate
    return None


def write_fallback_tokenizer(directory: Path) -> None:
    """A byte-level tokenizer with Qwen2-Audio's special tokens at their real ids, for machines without
    the real tokenizer files: every byte is a token, no merges."""
    byte_tokens = _bytes_to_unicode()
    vocab = {byte_tokens[byte]: byte for byte in range(256)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
    added = {str(151643 + index): {"content": token, "lstrip": False, "rstrip": False, "normalized": False,
                                   "single_word": False, "special": True} for index, token in enumerate(specials)}
    config = {
        "added_tokens_decoder": added,
        "additional_special_tokens": specials[1:],
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "tokenizer_class": "Qwen2Tokenizer",
        "chat_template": DEMO_CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1))


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(
        range(ord("\xae"), ord("\xff") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


# Qwen2AudioProcessor's default chat template (the one published checkpoints ship).
DEMO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != "
    "'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}"
    "\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in "
    "message['content'] %}{% if 'audio' in content or 'audio_url' in content %}{% set audio_count.value = "
    "audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in "
    "content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PREPROCESSOR_CONFIG = {
    "chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
    "hop_length": 160, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
    "padding_value": 0.0, "processor_class": "Qwen2AudioProcessor", "return_attention_mask": True,
    "sampling_rate": 16000,
}


def demo_checkpoint(directory: Path | None = None) -> Path:
    """Create (once) and return the demo checkpoint folder: random weights, the real tokenizer when
    the shared reference data is reachable, a byte-level stand-in otherwise."""
    directory = Path(directory) if directory else default_demo_dir()
    marker = directory / ".complete"
    if not marker.exists():
        write_random_checkpoint(directory, DEMO_CONFIG)
        reference = find_reference_tokenizer()
        if reference is not None:
            for name in TOKENIZER_FILES:
                if (reference / name).is_file():
                    shutil.copy(reference / name, directory / name)
        else:
            write_fallback_tokenizer(directory)
        if not (directory / "preprocessor_config.json").is_file():
            (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=1))
        marker.write_text("real-tokenizer" if reference is not None else "byte-tokenizer")
    return directory


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
    """The main job end to end: load, chat (audio analysis and voice chat, streamed), annotate."""
    import tempfile
    import time

    from .annotate import Annotator, annotate, read_manifest
    from .chat import ChatSession
    from .modeling import Qwen2AudioForConditionalGeneration
    from .processor import Qwen2AudioProcessor

    if model is None:
        model = str(demo_checkpoint())
        print(f"No --model or QWEN2AUDIO_MODEL: using the built-in tiny random checkpoint at {model}")
        print("(its weights are random, so its answers are noise; give a real Qwen2-Audio-7B-Instruct folder for "
              "real answers)")
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="qwen2audio-demo-"))
    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    for index, sentence in enumerate(DEMO_SENTENCES):
        synthesize_speech(sentence, clips / f"clip{index}.wav")
    print(f"Synthesized {len(DEMO_SENTENCES)} spoken clips into {clips}")

    started = time.perf_counter()
    loaded_model = Qwen2AudioForConditionalGeneration.from_pretrained(model)
    processor = Qwen2AudioProcessor.from_pretrained(model)
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
        stats = session.last_stats
        seconds = time.perf_counter() - turn_started
        print(f"\n[{stats.get('prefill_tokens', 0)} prompt tokens prefilled, {stats.get('new_tokens', 0)} new tokens, "
              f"{seconds:.2f} s]")

    print("\n== annotate")
    output = work / "annotations.jsonl"
    counts = annotate(Annotator(loaded_model, processor, generation), read_manifest(clips), "Transcribe the audio.",
                      output, batch_size=2, progress=False)
    for line in output.read_text().splitlines():
        print(line)
    print(f"{counts} -> {output}")
    return 0
