"""Adapters for joint-attention DiTs whose one feed-forward module serves both streams.

CogView4 and GLM-Image blocks run joint attention ``attn1`` over image and text tokens, then
call the *same* ``ff`` module twice: once on the image tokens, once on the text tokens. A branch
must run once per model evaluation (one cached output cannot stand for two calls), so the
structural ``diffusers-generic`` adapter, which takes ``ff`` as a branch, is refused there by
the engine. These adapters declare the attention only (kind ``attn1``): the feed-forward always
computes. The timestep source is the model (``timestep=``).
"""

from __future__ import annotations

from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument, block_branches
from smoothcache.hookspecs import hookimpl


class SharedFeedForwardAdapter(Adapter):
    """Joint attention cached, the shared feed-forward computed (see the module docstring)."""

    kinds = ("attn1",)
    timestep_position = 2

    def matches(self, model: nn.Module) -> bool:
        blocks = getattr(model, "transformer_blocks", None)
        return (
            super().matches(model)
            and isinstance(blocks, nn.ModuleList)
            and all(hasattr(b, "attn1") and hasattr(b, "ff") for b in blocks)
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        return block_branches(model, "transformer_blocks", self.kinds)

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource("", argument("timestep", self.timestep_position))


class CogView4Adapter(SharedFeedForwardAdapter):
    """CogView4 (``CogView4Transformer2DModel``)."""

    name = "cogview4"
    model_classes = ("CogView4Transformer2DModel",)
    timestep_position = 2  # hidden_states, encoder_hidden_states, timestep


class GlmImageAdapter(SharedFeedForwardAdapter):
    """GLM-Image (``GlmImageTransformer2DModel``)."""

    name = "glm-image"
    model_classes = ("GlmImageTransformer2DModel",)
    timestep_position = (
        4  # hidden_states, encoder_hidden_states, prior_token_id, ..._drop, timestep
    )


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The CogView4 and GLM-Image adapters."""
    return [CogView4Adapter(), GlmImageAdapter()]
