"""Audio input and Whisper's log-mel front end, as transformers' ``WhisperFeatureExtractor`` computes it
for Qwen2-Audio; the decoding, resampling and spectrogram run in the C++ core.
"""

from __future__ import annotations

import json
import operator
import os
import re
import shutil
import struct
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from . import _core, _files

__all__ = [
    "FFMPEG_EXTENSIONS",
    "AudioTruncatedWarning",
    "MissingSamplingRateWarning",
    "WhisperFeatureExtractor",
    "load_audio",
    "num_audio_tokens",
    "split_audio",
]

PREPROCESSOR_CONFIG = "preprocessor_config.json"
_DEFAULT_MAX_SECONDS = 3600.0
_MAX_SAMPLING_RATE = 1_000_000  # the C++ loader's limit
_MAX_SAMPLES = 2**62  # max_seconds beyond this many samples means "no limit" (the core takes int64)

AudioInput = Union[np.ndarray, Sequence[float]]

# Formats libsndfile does not read; load_audio decodes them with the ffmpeg program when it is installed.
FFMPEG_EXTENSIONS = (".m4a", ".aac", ".webm", ".mp4")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


class AudioTruncatedWarning(UserWarning):
    """A clip longer than the feature extractor's window (30 s for Qwen2-Audio) lost its end, as in transformers."""


class MissingSamplingRateWarning(UserWarning):
    """Audio arrays were given without ``sampling_rate=``, so nothing checks that they are at the rate the model
    expects (transformers warns likewise); audio at another rate would be read as if it were 16 kHz."""


# ----------------------------------------------------------------------------------------- files
def load_audio(
    path_or_bytes: Union[str, os.PathLike, bytes, bytearray, memoryview, Any],
    sampling_rate: int | None = None,
    *,
    sr: int | None = None,
    max_seconds: float = _DEFAULT_MAX_SECONDS,
) -> np.ndarray:
    """Decode an audio file to mono float32 at ``sampling_rate`` (default 16000; ``sr=`` is accepted as
    an alias, librosa's name, but unlike ``librosa.load`` only the array is returned).

    ``path_or_bytes`` is a path, the encoded file's bytes (``bytes``/``bytearray``/``memoryview``), or a
    binary file object. libsndfile decodes it (WAV, FLAC, Ogg/Vorbis, Opus, MP3, ...); m4a/AAC/WebM/MP4 (by
    extension, or bytes libsndfile cannot read) go through the ``ffmpeg`` program when it is installed
    (``apt-get install ffmpeg``), which decodes the codec before the same channel mixing and resampling. URLs are
    not fetched. Integer PCM
    comes back as int / 2**(bits-1), so 16-bit WAV gives exactly int16 / 32768. Channels are averaged;
    another rate is converted with libsoxr's high-quality resampler. Audio longer than ``max_seconds``
    is refused (a guard against absurd inputs; raise it to load longer files).

    Raises ValueError naming the source for unreadable, corrupt, empty or over-long audio.
    """
    if sr is not None:
        if sampling_rate is not None:
            raise ValueError("load_audio: give the rate as sampling_rate= or as sr= (librosa's name), not both")
        sampling_rate, name = sr, "sr"
    else:
        name = "sampling_rate"
    rate = _positive_int(16000 if sampling_rate is None else sampling_rate, name)
    if rate > _MAX_SAMPLING_RATE:
        raise ValueError(f"{name} must be at most {_MAX_SAMPLING_RATE}, got {rate}")
    if not isinstance(max_seconds, (int, float)) or not max_seconds > 0 or not np.isfinite(max_seconds):
        raise ValueError(f"max_seconds must be a positive number, got {max_seconds!r}")
    max_samples = min(max(1, int(max_seconds * rate)), _MAX_SAMPLES)
    if isinstance(path_or_bytes, (str, os.PathLike)):
        path = os.fspath(path_or_bytes)
        text = os.fsdecode(path)
        if _URL.match(text):
            raise ValueError(f"cannot load audio {text!r}: URLs are not fetched; download the file first")
        if not os.path.exists(path):
            raise ValueError(f"cannot load audio {text!r}: no such file")
        extension = os.path.splitext(text)[1].lower()
        if extension in FFMPEG_EXTENSIONS:
            if not os.path.isfile(path):  # a FIFO or device would block the reader, as libsndfile refuses them
                raise ValueError(f"cannot load audio {text!r}: not a regular file")
            return _ffmpeg_load(text, None, rate, max_samples, extension)
        try:
            return _core.load_audio_file(path, rate, max_samples)
        except ValueError:
            kind = _sniff_ffmpeg_format(_read_head(text))
            if kind is None:
                raise
            return _ffmpeg_load(text, None, rate, max_samples, kind)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return _load_bytes(bytes(path_or_bytes), rate, max_samples, "<bytes>")
    if hasattr(path_or_bytes, "read"):
        data = path_or_bytes.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError("the file object must be opened in binary mode ('rb')")
        name = getattr(path_or_bytes, "name", "<file object>")
        return _load_bytes(bytes(data), rate, max_samples, str(name))
    raise ValueError(
        f"load_audio takes a path, bytes or a binary file object, got {type(path_or_bytes).__name__}"
    )


def _load_bytes(data: bytes, rate: int, max_samples: int, name: str) -> np.ndarray:
    """libsndfile first; bytes it cannot decode go to ffmpeg when installed (m4a, AAC, WebM, ...)."""
    try:
        return _core.load_audio_bytes(data, rate, max_samples, name)
    except ValueError as error:
        kind = _sniff_ffmpeg_format(data[:16])
        if shutil.which("ffmpeg") is None:
            if kind is None:
                raise
            raise ValueError(f"cannot load audio {name}: install ffmpeg (apt-get install ffmpeg) to read {kind} "
                             "audio") from error
        try:
            return _ffmpeg_load(name, data, rate, max_samples, kind or "this")
        except ValueError:
            if kind is not None:
                raise
            raise error from None  # neither could read it: libsndfile's message names the problem


def _read_head(path: str) -> bytes:
    if not os.path.isfile(path):
        return b""  # opening a FIFO would wait for a writer
    try:
        with open(path, "rb") as stream:
            return stream.read(16)
    except OSError:
        return b""


def _sniff_ffmpeg_format(head: bytes) -> str | None:
    """The extension of an ffmpeg-only format recognised from a file's first bytes, else None."""
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return ".m4a"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ".webm"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:  # ADTS sync word, layer 0
        return ".aac"
    return None


def _ffmpeg_load(path: str, data: bytes | None, rate: int, max_samples: int, kind: str) -> np.ndarray:
    """Decodes with the ffmpeg program (a subprocess) to float WAV at the source's rate and channels, then
    reads that as every other file is read (channel average, libsoxr resampling, the same limits), so the
    samples do not depend on which decoder read the container. Bytes go through a temporary file: MP4
    keeps its index at the end, which ffmpeg cannot reach through a pipe."""
    label = repr(path) if data is None else path
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise ValueError(f"cannot load audio {label}: install ffmpeg (apt-get install ffmpeg) to read {kind} files")
    if data is not None:
        with tempfile.NamedTemporaryFile(prefix="qwen2audio-", suffix=kind if kind.startswith(".") else "") as copy:
            copy.write(data)
            copy.flush()
            return _run_ffmpeg(executable, copy.name, label, rate, max_samples)
    return _run_ffmpeg(executable, path, label, rate, max_samples)


def _run_ffmpeg(executable: str, path: str, label: str, rate: int, max_samples: int) -> np.ndarray:
    command = [executable, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", "file:" + path,
               "-map", "0:a:0", "-f", "wav", "-c:a", "pcm_f32le", "pipe:1"]
    chunks: list[bytes] = []
    too_long = False
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        try:
            total, limit = 0, None
            while True:
                chunk = process.stdout.read(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if limit is None:
                    limit = _wav_byte_limit(chunks[0], rate, max_samples)
                if limit is not None and total > limit:
                    too_long = True
                    break
        except BaseException:
            process.kill()  # Ctrl-C or a read error: stop ffmpeg too
            raise
        finally:
            if too_long:
                process.kill()
            process.stdout.close()
            status = process.wait()
        errors.seek(0)
        message = [line for line in errors.read().decode("utf-8", "replace").splitlines() if line.strip()]
    if too_long:
        raise ValueError(f"cannot load audio {label}: longer than the limit of {max_samples} samples at {rate} Hz "
                         f"({max_samples / rate:.0f} s); raise max_seconds to load it")
    if status != 0:
        detail = message[-1] if message else f"exit status {status}"
        raise ValueError(f"cannot load audio {label}: ffmpeg could not decode it ({detail})")
    wav = _fix_wav_sizes(b"".join(chunks))
    return _core.load_audio_bytes(wav, rate, max_samples, label)


def _wav_chunks(wav: bytes) -> list[tuple[bytes, int, int]]:
    """(id, data offset, declared size) of each chunk of a RIFF/WAVE header, up to the data chunk."""
    found = []
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        return found
    offset = 12
    while offset + 8 <= len(wav):
        chunk_id, size = wav[offset:offset + 4], struct.unpack_from("<I", wav, offset + 4)[0]
        found.append((chunk_id, offset + 8, size))
        if chunk_id == b"data":
            break
        offset += 8 + size + (size & 1)
    return found


def _wav_byte_limit(head: bytes, rate: int, max_samples: int) -> int | None:
    """How many bytes of ffmpeg's WAV output hold ``max_samples`` at ``rate`` (plus a second of slack)."""
    for chunk_id, start, _ in _wav_chunks(head):
        if chunk_id == b"fmt " and start + 14 <= len(head):
            source_rate = struct.unpack_from("<I", head, start + 4)[0]
            block_align = struct.unpack_from("<H", head, start + 12)[0]
            if source_rate and block_align:
                frames = max_samples * source_rate // rate + source_rate
                return 65536 + frames * block_align
    return None


def _fix_wav_sizes(wav: bytes) -> bytes:
    """A piped WAV has no sizes in its header (ffmpeg cannot seek back): fill them in."""
    data = next(((start, size) for chunk_id, start, size in _wav_chunks(wav) if chunk_id == b"data"), None)
    if data is None:
        return wav
    fixed = bytearray(wav)
    struct.pack_into("<I", fixed, 4, min(len(wav) - 8, 0xFFFFFFFF))
    struct.pack_into("<I", fixed, data[0] - 4, min(len(wav) - data[0], 0xFFFFFFFF))
    return bytes(fixed)


def split_audio(audio: np.ndarray, sampling_rate: int = 16000, chunk_seconds: float = 30.0) -> list[np.ndarray]:
    """Consecutive ``chunk_seconds`` windows of a 1-D clip (the last one shorter), so audio longer than the
    feature extractor's 30 s can be given to the model as several segments instead of being truncated."""
    rate = _positive_int(sampling_rate, "sampling_rate")
    if not isinstance(chunk_seconds, (int, float)) or not chunk_seconds > 0 or not np.isfinite(chunk_seconds):
        raise ValueError(f"chunk_seconds must be a positive number, got {chunk_seconds!r}")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"split_audio takes a 1-D mono clip, got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError("split_audio got an empty clip")
    window = int(round(chunk_seconds * rate))
    if window < 1:
        raise ValueError(f"chunk_seconds={chunk_seconds} is shorter than one sample at {rate} Hz")
    return [audio[start : start + window] for start in range(0, audio.size, window)]


def num_audio_tokens(feature_attention_mask_sum: int) -> int:
    """Audio tokens Qwen2-Audio's encoder gives for a clip with this many valid mel frames, as transformers'
    processor computes it: the conv stem halves the frames (stride 2), then the pooling halves them again. The
    engine's own formula (``_core.audio_token_count``), so the processor and the model cannot disagree."""
    frames = operator.index(feature_attention_mask_sum)
    if frames < 0:
        raise ValueError(f"the mask sum must be >= 0, got {frames}")
    return _core.audio_token_count(frames)


# ------------------------------------------------------------------------------ feature extractor
class WhisperFeatureExtractor:
    """transformers' ``WhisperFeatureExtractor`` (same settings, same outputs within 1e-4), computed in C++.

    Each clip is zero-padded or truncated to ``chunk_length`` seconds (``padding="max_length"``, the way
    Qwen2AudioProcessor calls it); clips longer than that are truncated as transformers does, with an
    :class:`AudioTruncatedWarning` (use :func:`split_audio` to keep everything).
    """

    model_input_names = ["input_features", "attention_mask"]
    _SETTINGS = ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft")
    _DERIVED = ("n_samples", "nb_max_frames")

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 16000,
        hop_length: int = 160,
        chunk_length: int = 30,
        n_fft: int = 400,
        padding_value: float = 0.0,
        dither: float = 0.0,
        return_attention_mask: bool = False,
        padding_side: str = "right",
        **kwargs: Any,
    ):
        settings = dict(zip(self._SETTINGS, (feature_size, sampling_rate, hop_length, chunk_length, n_fft)))
        for name, value in settings.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"WhisperFeatureExtractor: {name} must be an integer, got {value!r}")
            if not 0 < value < 2**31:  # the core checks each setting's own range
                raise ValueError(f"WhisperFeatureExtractor: {name} must be a positive 32-bit integer, got {value!r}")
            setattr(self, name, int(value))
        # Settings transformers has that change the numbers but Qwen2-Audio never uses: refuse rather
        # than compute something else.
        if padding_value != 0.0:
            raise ValueError(f"WhisperFeatureExtractor: only padding_value=0.0 is supported, got {padding_value!r}")
        if dither != 0.0:
            raise ValueError(f"WhisperFeatureExtractor: only dither=0.0 is supported, got {dither!r}")
        if padding_side != "right":
            raise ValueError(f"WhisperFeatureExtractor: only padding_side='right' is supported, got {padding_side!r}")
        self.padding_value = 0.0
        self.dither = 0.0
        self.padding_side = "right"
        self.return_attention_mask = bool(return_attention_mask)
        # Keys we do not interpret (processor_class, ...) survive a save_pretrained round trip.
        self._extra = {key: value for key, value in kwargs.items() if key not in self._DERIVED}
        self._extra.pop("feature_extractor_type", None)
        self._log_mel = _core.WhisperLogMel(
            feature_size=self.feature_size,
            sampling_rate=self.sampling_rate,
            hop_length=self.hop_length,
            chunk_length=self.chunk_length,
            n_fft=self.n_fft,
        )

    # ------------------------------------------------------------------------------- properties
    @property
    def n_samples(self) -> int:
        return self.chunk_length * self.sampling_rate

    @property
    def nb_max_frames(self) -> int:
        return self.n_samples // self.hop_length

    @property
    def mel_filters(self) -> np.ndarray:
        """The slaney mel bank in transformers' orientation, [n_fft // 2 + 1, feature_size], float64."""
        return self._log_mel.mel_filters.T

    # ---------------------------------------------------------------------------- serialisation
    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], **kwargs: Any) -> "WhisperFeatureExtractor":
        """Read ``preprocessor_config.json`` from a checkpoint folder (or that file's path); settings it omits
        take transformers' defaults, and ``kwargs`` override it."""
        path = Path(path)
        config_path = path / PREPROCESSOR_CONFIG if path.is_dir() else path
        if not config_path.is_file():
            raise ValueError(f"no {PREPROCESSOR_CONFIG} at {config_path}")
        config = _files.read_json(config_path)
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: expected a JSON object")
        kind = config.get("feature_extractor_type", "WhisperFeatureExtractor")
        if kind != "WhisperFeatureExtractor":
            raise ValueError(f"{config_path}: feature_extractor_type is {kind!r}, expected 'WhisperFeatureExtractor'")
        config.update(kwargs)
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        values = dict(self._extra)
        values.update({name: getattr(self, name) for name in self._SETTINGS})
        values.update(
            feature_extractor_type="WhisperFeatureExtractor",
            n_samples=self.n_samples,
            nb_max_frames=self.nb_max_frames,
            padding_side=self.padding_side,
            padding_value=self.padding_value,
            dither=self.dither,
            return_attention_mask=self.return_attention_mask,
        )
        return dict(sorted(values.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, path: Union[str, os.PathLike]) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        target = path / PREPROCESSOR_CONFIG
        target.write_text(self.to_json_string(), encoding="utf-8")
        return target

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    # ---------------------------------------------------------------------------------- features
    def __call__(
        self,
        raw_speech: Union[AudioInput, Sequence[AudioInput]],
        sampling_rate: int | None = None,
        return_attention_mask: bool | None = True,
        padding: Union[str, bool] = "max_length",
        truncation: bool = True,
        return_tensors: str | None = "np",
        num_threads: int | None = None,
        device: str = "cpu",
    ) -> dict[str, Any]:
        """Log-mel features of one clip or a list of clips.

        Returns ``{"input_features": (B, feature_size, nb_max_frames) float32,
        "attention_mask": (B, nb_max_frames) int32}`` (the mask only with ``return_attention_mask``).
        Clips are 1-D NumPy arrays (float32, float64, float16; int16 and int32 PCM are scaled to [-1, 1),
        which transformers does not do) or lists of floats. ``num_threads``: None uses OpenMP's default.
        ``device``: ``"cpu"``, or ``"cuda"`` / ``"cuda:N"`` to compute the spectrogram on a GPU (as transformers'
        ``device`` argument; needs the CUDA backend, else :class:`qwen2audio.DeviceError`).
        """
        if not isinstance(device, str):
            device = str(device)
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"the audio was given at sampling_rate={sampling_rate}, but this feature extractor expects "
                f"{self.sampling_rate} Hz. Resample it first, e.g. qwen2audio.load_audio(path, "
                f"sampling_rate={self.sampling_rate}) reads and resamples a file."
            )
        if padding not in ("max_length", True):
            raise ValueError(
                f"only padding='max_length' is supported (every clip becomes {self.chunk_length} s, as Qwen2-Audio "
                f"expects), got padding={padding!r}"
            )
        if return_tensors not in ("np", "pt", None):
            raise ValueError(f"return_tensors must be 'np', 'pt' or None, got {return_tensors!r}")
        if num_threads is not None and (isinstance(num_threads, bool) or operator.index(num_threads) < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")

        clips = [self._as_clip(clip, index) for index, clip in enumerate(self._as_batch(raw_speech))]
        long_clips = [(index, clip.size) for index, clip in enumerate(clips) if clip.size > self.n_samples]
        if long_clips:
            if not truncation:
                index, size = long_clips[0]
                raise ValueError(
                    f"audio clip {index} is {size / self.sampling_rate:.1f} s, longer than {self.chunk_length} s, "
                    "and truncation=False: split it with qwen2audio.split_audio(audio)"
                )
            described = ", ".join(f"clip {index}: {size / self.sampling_rate:.1f} s" for index, size in long_clips)
            warnings.warn(
                AudioTruncatedWarning(
                    f"audio longer than {self.chunk_length} s is truncated to its first {self.chunk_length} s, as "
                    f"transformers does ({described}). To keep all of it, split it into {self.chunk_length} s "
                    "windows with qwen2audio.split_audio(audio) (the processor: long_audio='chunk')."
                ),
                stacklevel=2,
            )
        if device == "cpu":
            features, mask = self._log_mel(clips, num_threads=num_threads)
        else:
            features, mask = self._device_log_mel(device)(clips)
        result: dict[str, Any] = {"input_features": features}
        if return_attention_mask or (return_attention_mask is None and self.return_attention_mask):
            result["attention_mask"] = mask
        if return_tensors == "pt":
            import torch

            result = {key: torch.from_numpy(value) for key, value in result.items()}
        elif return_tensors is None:
            result = {key: list(value) for key, value in result.items()}
        return result

    def _device_log_mel(self, device: str) -> Any:
        """The GPU front end for ``device``, made on first use and kept (it holds device buffers and an FFT plan)."""
        cache = self.__dict__.setdefault("_device_log_mels", {})
        if device not in cache:
            cache[device] = _core.DeviceWhisperLogMel(
                feature_size=self.feature_size, sampling_rate=self.sampling_rate, hop_length=self.hop_length,
                chunk_length=self.chunk_length, n_fft=self.n_fft, device=device)
        return cache[device]

    @staticmethod
    def _as_batch(raw_speech: Any) -> list[Any]:
        # As transformers: a list whose items are arrays or sequences is a batch; a flat list of numbers
        # is one clip.
        if isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("no audio given (an empty list)")
            if isinstance(raw_speech[0], (np.ndarray, list, tuple)):
                return list(raw_speech)
            return [raw_speech]
        if isinstance(raw_speech, np.ndarray):
            return [raw_speech]
        raise ValueError(
            f"raw_speech must be a 1-D NumPy array, a list of floats or a list of those, got {type(raw_speech).__name__}"
            " (to read a file: qwen2audio.load_audio(path))"
        )

    def _as_clip(self, clip: Any, index: int) -> np.ndarray:
        if not isinstance(clip, np.ndarray):
            try:
                clip = np.asarray(clip, dtype=np.float32)
            except (TypeError, ValueError):
                raise ValueError(f"audio clip {index} is not numeric") from None
        if clip.ndim != 1:
            hint = (
                " It looks like multi-channel audio: average the channels to mono first, e.g. audio.mean(axis=1) "
                "for (samples, channels)."
                if clip.ndim == 2
                else ""
            )
            raise ValueError(f"audio clip {index} must be 1-D (mono samples), got shape {clip.shape}.{hint}")
        if clip.size == 0:
            raise ValueError(f"audio clip {index} is empty")
        kind = clip.dtype
        if kind == np.float32:
            samples = clip
        elif kind in (np.float64, np.float16):
            samples = clip.astype(np.float32)
        elif kind == np.int16:
            samples = clip.astype(np.float32) / np.float32(32768.0)
        elif kind == np.int32:
            samples = (clip.astype(np.float64) / 2147483648.0).astype(np.float32)
        else:
            raise ValueError(
                f"audio clip {index} has dtype {kind}; give float32/float64 samples in [-1, 1] or int16/int32 PCM"
            )
        return np.ascontiguousarray(samples)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
