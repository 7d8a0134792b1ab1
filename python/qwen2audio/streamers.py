"""Text streamers with transformers' interface: ``TextStreamer`` prints the reply as it is generated,
``TextIteratorStreamer`` hands it to another thread as an iterator.

Both work with ``model.generate(..., streamer=streamer)`` exactly as transformers' do (``put`` gets
the prompt first, then each step's tokens; ``end`` at the end). Unlike transformers', they decode
through the tokenizer's incremental decoder, so a character split over several tokens (emoji, CJK
in byte-level BPE) is never printed as U+FFFD halves: it comes out whole once its last byte arrives.
Text is released at the same places as transformers' (after a space, a newline, or a CJK character).
"""

from __future__ import annotations

from queue import Queue
from typing import Any, Optional

import numpy as np

from . import _torch

__all__ = ["BaseStreamer", "TextStreamer", "TextIteratorStreamer"]

# Keyword arguments transformers' streamers forward to tokenizer.decode; ours decodes incrementally,
# so only these are meaningful (spaces_between_special_tokens changes nothing for byte-level BPE).
_DECODE_KWARGS = ("skip_special_tokens", "clean_up_tokenization_spaces", "spaces_between_special_tokens")


class BaseStreamer:
    """What ``generate`` calls: ``put(token_ids)`` with the prompt, then with each step's tokens; ``end()``."""

    def put(self, value: Any) -> None:
        raise NotImplementedError()

    def end(self) -> None:
        raise NotImplementedError()


def _is_cjk(codepoint: int) -> bool:
    # transformers' TextStreamer._is_chinese_char: the CJK Unified Ideographs blocks.
    return (0x4E00 <= codepoint <= 0x9FFF or 0x3400 <= codepoint <= 0x4DBF or 0x20000 <= codepoint <= 0x2A6DF
            or 0x2A700 <= codepoint <= 0x2B73F or 0x2B740 <= codepoint <= 0x2B81F or 0x2B820 <= codepoint <= 0x2CEAF
            or 0xF900 <= codepoint <= 0xFAFF or 0x2F800 <= codepoint <= 0x2FA1F)


class TextStreamer(BaseStreamer):
    """Prints generated text to stdout as it comes, word by word (transformers' ``TextStreamer``).

    ``tokenizer``: the processor's tokenizer (a processor works too). ``skip_prompt=True`` leaves out the
    prompt ``generate`` hands over first. ``decode_kwargs``: ``skip_special_tokens``,
    ``clean_up_tokenization_spaces`` (as ``tokenizer.decode``). Batch size 1 only, as in transformers.
    Override :meth:`on_finalized_text` to send the text elsewhere.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any):
        unknown = sorted(set(decode_kwargs) - set(_DECODE_KWARGS))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected decode argument(s) {', '.join(unknown)} "
                            f"(accepted: {', '.join(_DECODE_KWARGS)})")
        if not hasattr(tokenizer, "incremental_decoder") and hasattr(tokenizer, "tokenizer"):
            tokenizer = tokenizer.tokenizer  # a processor
        if not hasattr(tokenizer, "incremental_decoder"):
            raise TypeError(f"{type(self).__name__} needs a qwen2audio tokenizer (processor.tokenizer), got "
                            f"{type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.skip_prompt = bool(skip_prompt)
        self.decode_kwargs = decode_kwargs
        self._skip_special = bool(decode_kwargs.get("skip_special_tokens", False))
        self._clean_up = decode_kwargs.get("clean_up_tokenization_spaces")
        self.next_tokens_are_prompt = True
        self._decoder = tokenizer.incremental_decoder(skip_special_tokens=self._skip_special)
        self._pending = ""  # decoded, complete characters not yet released

    @staticmethod
    def _ids(value: Any) -> list[int]:
        array = np.asarray(_torch.to_numpy(value))
        if array.ndim > 1 and array.shape[0] > 1:
            raise ValueError("TextStreamer only supports batch size 1")
        if array.ndim > 1:
            array = array[0]
        return [int(token) for token in array.reshape(-1)]

    def put(self, value: Any) -> None:
        """Takes the prompt (first call) or the next tokens, shape ``(1, n)`` or ``(n,)``."""
        ids = self._ids(value)
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.next_tokens_are_prompt = False
        for token in ids:
            self._pending += self._decoder.add(token)
        text = self._pending
        if not text:
            return
        if text.endswith("\n") or _is_cjk(ord(text[-1])):
            release = len(text)
        else:
            release = text.rfind(" ") + 1
            if self._clean_up:
                # Keep the space with what follows, so " ." split over two releases still cleans up.
                release = max(0, release - 1)
        if release:
            self._pending = text[release:]
            self.on_finalized_text(self._finish(text[:release]))

    def end(self) -> None:
        """Releases what is left and ends the stream."""
        text = self._pending + self._decoder.flush()
        self._pending = ""
        self._decoder = self.tokenizer.incremental_decoder(skip_special_tokens=self._skip_special)
        self.next_tokens_are_prompt = True
        self.on_finalized_text(self._finish(text), stream_end=True)

    def _finish(self, text: str) -> str:
        return self.tokenizer._clean_up(text, self._clean_up) if text else text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Prints ``text``, with a newline at the end of the stream."""
        print(text, flush=True, end="" if not stream_end else None)


class TextIteratorStreamer(TextStreamer):
    """Generated text as an iterator, for a consumer in another thread (transformers' ``TextIteratorStreamer``)::

        streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        thread = Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer, max_new_tokens=64))
        thread.start()
        for text in streamer:
            print(text, end="")

    ``timeout``: seconds ``next()`` waits for text before raising ``queue.Empty`` (None: forever). The
    iteration ends when generation does, also when it fails.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: Optional[float] = None,
                 **decode_kwargs: Any):
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout >= 0):
            raise ValueError(f"timeout must be None or a non-negative number of seconds, got {timeout!r}")
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: "Queue[Optional[str]]" = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self) -> "TextIteratorStreamer":
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value == self.stop_signal:
            raise StopIteration()
        return value
