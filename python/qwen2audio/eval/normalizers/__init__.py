"""The text normalizers of the official Qwen2-Audio ASR scorer."""

from .basic import BasicTextNormalizer
from .chinese import ChineseTextNormalizer
from .english import EnglishTextNormalizer
from .traditional import to_simplified

__all__ = ["BasicTextNormalizer", "ChineseTextNormalizer", "EnglishTextNormalizer", "to_simplified"]
