"""Scorers that reproduce the official Qwen2-Audio and AIR-Bench scoring scripts number for number."""
