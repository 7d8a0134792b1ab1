"""Writes the seed corpora of fuzz_audio, fuzz_tokenizer and fuzz_tokenizer_files (tests/fuzz/corpus/<name>/).

Audio seeds are short clips in every container and codec libsndfile reads, written by libsndfile
itself (through ctypes, so MP3 and Opus are covered without extra tools). Tokenizer seeds are
texts (first byte even) and id sequences (first byte odd) in the target's input format.
Run with the project's Python: .venv/bin/python tests/fuzz/make_seeds.py
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import struct
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[2] / "shared" / "reference"

# libsndfile's format codes (sndfile.h).
SF_FORMAT = {
    "WAV": 0x010000, "AIFF": 0x020000, "AU": 0x030000, "W64": 0x0B0000, "CAF": 0x180000, "FLAC": 0x170000,
    "OGG": 0x200000, "MPEG": 0x230000,
}
SF_CODEC = {
    "PCM_S8": 0x0001, "PCM_16": 0x0002, "PCM_24": 0x0003, "PCM_U8": 0x0005, "FLOAT": 0x0006, "ULAW": 0x0010,
    "IMA_ADPCM": 0x0012, "MS_ADPCM": 0x0013, "VORBIS": 0x0060, "OPUS": 0x0064, "MPEG_LAYER_III": 0x0082,
}
SFM_WRITE = 0x20


class SfInfo(ctypes.Structure):
    _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int), ("channels", ctypes.c_int),
                ("format", ctypes.c_int), ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]


def write_clip(library: ctypes.CDLL, path: Path, container: str, codec: str, rate: int, channels: int,
               seconds: float) -> bool:
    info = SfInfo(0, rate, channels, SF_FORMAT[container] | SF_CODEC[codec], 0, 0)
    handle = library.sf_open(str(path).encode(), SFM_WRITE, ctypes.byref(info))
    if not handle:
        return False
    frames = int(rate * seconds)
    samples = (ctypes.c_float * (frames * channels))()
    for frame in range(frames):
        for channel in range(channels):
            samples[frame * channels + channel] = 0.5 * math.sin(2 * math.pi * (440 + 220 * channel) * frame / rate)
    library.sf_writef_float(handle, samples, ctypes.c_int64(frames))
    library.sf_close(handle)
    return True


def audio_seeds(target: Path) -> None:
    library = ctypes.CDLL(ctypes.util.find_library("sndfile") or "libsndfile.so.1")
    library.sf_open.restype = ctypes.c_void_p
    library.sf_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(SfInfo)]
    library.sf_writef_float.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    library.sf_close.argtypes = [ctypes.c_void_p]
    clips = [
        ("wav16_mono_16k.wav", "WAV", "PCM_16", 16000, 1, 0.05),
        ("wav8_mono_8k.wav", "WAV", "PCM_U8", 8000, 1, 0.05),
        ("wavfloat_stereo_44k.wav", "WAV", "FLOAT", 44100, 2, 0.03),
        ("wav_ulaw_8k.wav", "WAV", "ULAW", 8000, 1, 0.05),
        ("wav_ima_adpcm.wav", "WAV", "IMA_ADPCM", 16000, 1, 0.05),
        ("wav_ms_adpcm.wav", "WAV", "MS_ADPCM", 16000, 2, 0.05),
        ("aiff24_22k.aiff", "AIFF", "PCM_24", 22050, 1, 0.05),
        ("au_s8.au", "AU", "PCM_S8", 11025, 1, 0.05),
        ("w64.w64", "W64", "PCM_16", 16000, 1, 0.03),
        ("caf.caf", "CAF", "PCM_16", 48000, 3, 0.02),
        ("flac16.flac", "FLAC", "PCM_16", 16000, 1, 0.1),
        ("vorbis.ogg", "OGG", "VORBIS", 16000, 1, 0.2),
        ("opus.opus", "OGG", "OPUS", 48000, 1, 0.1),
        ("mp3.mp3", "MPEG", "MPEG_LAYER_III", 16000, 1, 0.2),
    ]
    for name, container, codec, rate, channels, seconds in clips:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / name
            if write_clip(library, path, container, codec, rate, channels, seconds):
                # The target's first byte picks the output rate (0: 16 kHz).
                (target / name).write_bytes(b"\x00" + path.read_bytes())
            else:
                print(f"libsndfile cannot write {name}; skipped")


def tokenizer_seeds(target: Path) -> None:
    texts = {
        "english": "Hello world! This is a test of the tokenizer, isn't it?  Numbers: 12345 and 3.14.",
        "chat": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWhat is said?<|im_end|>\n<|im_start|>assistant\n",
        "multilingual": "Grüße aus Köln — 你好，世界。こんにちは 안녕하세요 Привет мир 🎉👍🏽 e\u0301 \u212b",
        "whitespace": "a\t\tb\r\n\n\n   c \u00a0 d\u3000e   ",
        "code": "def f(x):\n    return x ** 2  # square\n\tif (a && b) { c[i]++; }",
    }
    for name, text in texts.items():
        (target / f"text_{name}").write_bytes(b"\x00" + text.encode())
    examples = json.loads((REFERENCE / "tokenizer" / "chat_examples.json").read_text())["examples"]
    sequences = {"ascii_and_specials": [9707, 1879, 0, 151644, 151645, 151646, 151647, 151648, 198]}
    for example in examples[:3]:
        sequences[f"chat_{example['name']}"] = [int(token) for token in example["input_ids_unexpanded"][:300]]
    # Byte tokens that make a split 4-byte character and lone continuation bytes.
    sequences["split_utf8"] = [156, 253, 236, 222, 124, 131, 156, 109]
    for name, sequence in sequences.items():
        payload = b"".join(struct.pack("<I", token)[:3] for token in sequence)
        (target / f"ids_{name}").write_bytes(b"\x01" + payload)


def bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def tokenizer_files_seeds(target: Path) -> None:
    """fuzz_tokenizer_files: first byte 0 tokenizer_config.json, 1 added_tokens.json, 2 tokenizer.json,
    3 merges.txt; the reference files where they are small, a small tokenizer.json made here."""
    reference = REFERENCE / "tokenizer"
    (target / "tokenizer_config").write_bytes(b"\x00" + (reference / "tokenizer_config.json").read_bytes())
    (target / "added_tokens").write_bytes(b"\x01" + (reference / "added_tokens.json").read_bytes())
    (target / "merges").write_bytes(b"\x03#version: 0.2\nh e\nl l\nhe ll\n")
    full = json.loads((reference / "tokenizer.json").read_text(encoding="utf-8"))
    alphabet = bytes_to_unicode()
    vocab = {alphabet[byte]: byte for byte in range(256)}
    vocab.update({"he": 256, "ll": 257, "hell": 258})
    small = {key: value for key, value in full.items() if key != "model"}
    small["added_tokens"] = [dict(token, id=300 + index) for index, token in enumerate(full["added_tokens"][:3])]
    small["model"] = dict(full["model"], vocab=vocab, merges=["h e", ["l", "l"], "he ll"])
    (target / "tokenizer_json").write_bytes(b"\x02" + json.dumps(small, ensure_ascii=False).encode())


def main() -> None:
    for name, make in (("audio", audio_seeds), ("tokenizer", tokenizer_seeds),
                       ("tokenizer_files", tokenizer_files_seeds)):
        target = HERE / "corpus" / name
        target.mkdir(parents=True, exist_ok=True)
        make(target)
        print(f"{target}: {len(list(target.iterdir()))} seeds")


if __name__ == "__main__":
    main()
