"""Code the benchmark scripts share; every script is its settings and its table.

- :mod:`.bench`: the digits DiTs' quality harness (model, sample batches, one row per method);
- :mod:`.peers`: the rows the library's forecast is measured against (fewer steps, FORA, the
  paper's rule, the schedule search, diffusers' caches, cache-dit) and :mod:`.forecast_rows`,
  the library's forecast rows;
- :mod:`.scoring`: every row's quality, latency and margin over its peers;
- :mod:`.report` and :mod:`.plot`: the quality page's Markdown and its plots;
- :mod:`.stats`: batch PSNR, bootstrap intervals, the peer envelope, Fréchet distance;
- :mod:`.calibration`: the calibration the quality benchmarks share, read from or saved to
  ``--curves``;
- :mod:`.timing`: interleaved timing rounds, progress lines, the machine in words;
- :mod:`.dit`: random diffusers and original-DiT models and their DDIM sampler, for speed.
"""
