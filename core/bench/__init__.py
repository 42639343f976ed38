"""Benchmark tasks in the style of the RLM paper, generated locally and seeded (no downloads)."""

from .sniah import SniahCase, make_sniah, score_exact

__all__ = ["SniahCase", "make_sniah", "score_exact"]
