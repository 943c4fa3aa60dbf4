"""The SD3 / SD3.5 and Lumina2 block fast paths (``adapters/families.py``).

The conformance kit (run on every class by the coverage matrix) already holds them to bit
identity with the plain wrappers; these tests show that they actually skip the input
preparation of a reused branch, in every block list and block variant, and stay exact with
the options the block forwards have (SD3's chunked feed-forward).
"""

from __future__ import annotations

import pytest
import torch

import smoothcache
from smoothcache.testing.models.diffusers_zoo import ZOO, randomize_zeros_, run

STEPS = 6
ROW = [1, 0, 1, 0, 1, 1]


def _calls(module: torch.nn.Module, tally: list[int]) -> None:
    """Count ``module``'s forward calls without a hook (a hook turns the fast path off)."""
    original = module.forward

    def forward(*args, **kwargs):
        tally.append(1)
        return original(*args, **kwargs)

    module.forward = forward


def _norm_calls(name: str, schedule: dict, norms: list[str]) -> dict[bool, tuple[int, ...]]:
    """Calls of each named norm module (``list.index.child``) in a cached run, without and
    with the fast path; the outputs of both runs must be bit-identical, and differ from an
    uncached run's (the reuse was real)."""
    entry = ZOO[name]
    model = entry.factory()
    randomize_zeros_(model)
    plain = run(entry, model, num_steps=STEPS)
    calls, outputs = {}, {}
    for fast in (False, True):
        tallies = {norm: [] for norm in norms}
        for norm, tally in tallies.items():
            _calls(model.get_submodule(norm), tally)
        with smoothcache.enabled(model, schedule, fast_path=fast) as session:
            outputs[fast] = run(entry, model, num_steps=STEPS)
            assert sum(session.stats.reused.values()) > 0
        for norm in norms:
            del model.get_submodule(norm).forward
        calls[fast] = tuple(len(tallies[norm]) for norm in norms)
    assert torch.equal(outputs[True], outputs[False])
    assert not torch.equal(outputs[True], plain)
    return calls


def test_sd3_fast_path_skips_the_layer_norms_of_reused_branches():
    # block 0 is SD3.5's dual-attention block, block 1 the last (context_pre_only) block
    norms = [
        "transformer_blocks.0.norm1.norm",
        "transformer_blocks.0.norm1_context.norm",
        "transformer_blocks.0.norm2",
        "transformer_blocks.0.norm2_context",
        "transformer_blocks.1.norm1.norm",
        "transformer_blocks.1.norm1_context.norm",
        "transformer_blocks.1.norm2",
    ]
    schedule = {"attn": ROW, "attn2": ROW, "ff": ROW, "ff_context": ROW}
    calls = _norm_calls("SD3Transformer2DModel", schedule, norms)
    assert calls[False] == (STEPS,) * len(norms)
    # computed steps, plus step 0's check against the block's own forward
    assert calls[True] == (sum(ROW) + 1,) * len(norms)


def test_sd3_dual_attention_computes_the_shared_norm_when_only_attn2_computes():
    every = [1] * STEPS
    calls = _norm_calls(
        "SD3Transformer2DModel",
        {"attn": ROW, "attn2": every},
        ["transformer_blocks.0.norm1.norm", "transformer_blocks.0.norm1_context.norm"],
    )
    assert calls[True] == (STEPS + 1, sum(ROW) + 1)


def test_lumina2_fast_path_covers_every_block_list():
    # the refiner of the noise and the main layers are modulated: their norm1 is an adaLN module
    # whose Linear (the gates) runs every step, and whose RMSNorm is what a reuse skips; the
    # text refiner has no timestep and a plain RMSNorm
    norm1 = {"noise_refiner": "norm1.norm", "context_refiner": "norm1", "layers": "norm1.norm"}
    norms = [f"{name}.0.{norm}" for name, first in norm1.items() for norm in (first, "ffn_norm1")]
    schedule = {
        kind: ROW
        for kind in (
            "attn",
            "feed_forward",
            "noise_refiner.attn",
            "noise_refiner.feed_forward",
            "context_refiner.attn",
            "context_refiner.feed_forward",
        )
    }
    calls = _norm_calls("Lumina2Transformer2DModel", schedule, norms)
    assert calls[False] == (STEPS,) * len(norms)
    assert calls[True] == (sum(ROW) + 1,) * len(norms)


def test_sd3_chunked_feed_forward_is_refused_with_and_without_the_fast_path():
    """Chunking calls ``ff`` once per chunk: the engine refuses it loudly, and the fast path,
    checked at step 0 against the block's own forward, does not hide that."""
    entry = ZOO["SD3Transformer2DModel"]
    model = entry.factory()
    model.enable_forward_chunking(chunk_size=2, dim=1)
    for fast in (False, True):
        with pytest.raises(smoothcache.AdapterError, match="called twice in one model evaluation"):
            with smoothcache.enabled(model, {"ff": ROW}, fast_path=fast):
                run(entry, model, num_steps=STEPS)
