"""Tiny random models for the tests, the conformance kit's users and the benchmarks.

The original DiT's structure (``original_dit``), Open-Sora's STDiT3 and STDiT2 stand-ins
(``stdit``), tiny diffusers DiT, PixArt and Stable Audio models and pipelines (``tiny_*``), and
the zoo of every transformer class diffusers exports (``diffusers_zoo``). Each builds from a
small config in milliseconds on a CPU, with no download; ``random_init`` re-randomises the
zero-initialised weights that would make caching a no-op.
"""
