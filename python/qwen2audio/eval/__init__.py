"""``qwen2audio eval``: the Qwen2-Audio paper's evaluation (ASR, speech translation, emotion, vocal sound,
AIR-Bench) run on this engine and scored the way the official scripts score, number for number.

Scoring needs no model: :mod:`qwen2audio.eval.scorers` works on responses produced anywhere.
"""
