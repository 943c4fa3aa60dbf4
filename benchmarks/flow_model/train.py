"""Train the flow-matching digits model: FLUX.1's transformer class on scikit-learn's digits.

A benchmark fixture (``README.md`` beside this file has the recipe and why it was fixed before
any cache ran on the model). Rectified flow as FLUX.1 and SD3 train it: ``x_t = (1 - s) x0 + s
noise``, the model predicts the velocity ``noise - x0``, and ``s`` is drawn logit-normal (mean
0, std 1) and then shifted by the same ``e^1.15`` the sampler uses at this resolution. A class
is a prompt: two prompt tokens and a pooled embedding per class, learned with the model; 10% of
the samples get the null prompt (row 10), for classifier-free guidance. The latents are packed
and the position ids made by ``FluxPipeline``'s own helpers, so training sees exactly what the
pipeline passes. Run (the defaults are the recipe of the weights beside this file)::

    python -m benchmarks.flow_model.train --out benchmarks/flow_model
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import diffusers
import torch
import torch.nn.functional as F
from diffusers import FluxPipeline
from safetensors.torch import save_file
from torch import nn

from benchmarks.common.timing import device_line
from benchmarks.flow_model.model import (
    EMBEDS,
    GUIDANCE,
    MODEL,
    NULL_CLASS,
    NUM_CLASSES,
    PROMPT_TOKENS,
    SCHEDULER,
    SIDE,
    STEPS,
    WEIGHTS,
    build_transformer,
)
from benchmarks.second_model.train import digits_tensor

SEED = 0
SHIFT = math.exp(SCHEDULER["max_shift"])  # the sampler's shift at this model's full resolution
DEFAULT_OUT = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    """The command line; the defaults are the recipe of the weights beside this file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4000, help="optimizer steps (4000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=250, help="linear warm-up steps")
    parser.add_argument("--label-dropout", type=float, default=0.1)
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    return parser.parse_args()


class Prompts(nn.Module):
    """The learned prompt of every class and of the null class (row 10)."""

    def __init__(self) -> None:
        super().__init__()
        width, pooled = MODEL["joint_attention_dim"], MODEL["pooled_projection_dim"]
        self.tokens = nn.Parameter(torch.randn(NUM_CLASSES + 1, PROMPT_TOKENS, width) * 0.5)
        self.pooled = nn.Parameter(torch.randn(NUM_CLASSES + 1, pooled) * 0.5)


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to a tenth of the base rate."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def save(model: nn.Module, prompts: Prompts, args: argparse.Namespace, record: dict) -> None:
    """The transformer's weights, the class prompts and a ``config.json`` with the recipe."""
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / WEIGHTS), metadata={"format": "pt"})
    embeds = {
        "prompt_embeds": prompts.tokens.detach().contiguous(),
        "pooled_prompt_embeds": prompts.pooled.detach().contiguous(),
    }
    save_file(embeds, str(args.out / EMBEDS), metadata={"format": "pt"})
    config: dict[str, Any] = {
        "model": MODEL,
        "class": "diffusers.FluxTransformer2DModel",
        "pipeline": "diffusers.FluxPipeline (prompt embeddings, true_cfg_scale, "
        "output_type='latent')",
        "scheduler": {"class": "FlowMatchEulerDiscreteScheduler", **SCHEDULER},
        "sampling": {"num_inference_steps": STEPS, "true_cfg_scale": GUIDANCE, "side": SIDE},
        "num_classes": NUM_CLASSES,
        "null_class": NULL_CLASS,
        "prompt_tokens": PROMPT_TOKENS,
        "pixel_range": [-1.0, 1.0],
        "data": "sklearn.datasets.load_digits (1,797 8x8 images, values 0-16, scaled to [-1, 1])",
        "training": {
            "seed": SEED,
            **record,
            "objective": "rectified flow, velocity noise - x0, sigma logit-normal(0, 1) shifted "
            f"by e^{SCHEDULER['max_shift']}",
            "batch_size": args.batch_size,
            "optimizer": f"AdamW lr {args.lr:g} weight_decay 0.01, grad clip 1.0",
            "lr_schedule": f"linear warm-up {args.warmup} steps, then cosine decay to 0.1x",
            "label_dropout": args.label_dropout,
            "ema_decay": args.ema,
            "device": device_line(torch.device("cpu")),
            "threads": args.threads,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "command": f"python -m benchmarks.flow_model.train --steps {args.steps} "
            f"--threads {args.threads}",
        },
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def train(args: argparse.Namespace) -> None:
    """The training loop; saves the EMA weights and prompts to ``--out``."""
    torch.manual_seed(SEED)
    images, labels = digits_tensor()
    model = build_transformer().train()
    prompts = Prompts()
    ema_model, ema_prompts = copy.deepcopy(model).requires_grad_(False), copy.deepcopy(prompts)
    params = list(model.parameters()) + list(prompts.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(SEED)
    half = SIDE // 2
    img_ids = FluxPipeline._prepare_latent_image_ids(1, half, half, "cpu", torch.float32)
    txt_ids = torch.zeros(PROMPT_TOKENS, 3)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(images)} images")

    smoothed, start, cursor = 0.0, time.monotonic(), 0
    order = torch.randperm(len(images), generator=gen)
    for step in range(args.steps):
        if cursor + args.batch_size > len(images):
            order, cursor = torch.randperm(len(images), generator=gen), 0
        idx = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        x0, y = images[idx], labels[idx].clone()
        n = len(idx)
        y[torch.rand(n, generator=gen) < args.label_dropout] = NULL_CLASS
        u = torch.sigmoid(torch.randn(n, generator=gen))
        sigma = SHIFT * u / (1.0 + (SHIFT - 1.0) * u)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1)
        xt = (1.0 - s) * x0 + s * noise
        packed = FluxPipeline._pack_latents(xt, n, 1, SIDE, SIDE)
        velocity = FluxPipeline._pack_latents(noise - x0, n, 1, SIDE, SIDE)
        pred = model(
            hidden_states=packed,
            encoder_hidden_states=prompts.tokens[y],
            pooled_projections=prompts.pooled[y],
            timestep=sigma,
            img_ids=img_ids,
            txt_ids=txt_ids,
        ).sample
        loss = F.mse_loss(pred, velocity)

        lr = learning_rate(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(args.ema, (1.0 + step) / (10.0 + step))
            for ema, live in ((ema_model, model), (ema_prompts, prompts)):
                for e, p in zip(ema.parameters(), live.parameters()):
                    e.lerp_(p, 1.0 - decay)

        value = loss.item()
        smoothed = value if step == 0 else 0.99 * smoothed + 0.01 * value
        done, elapsed = step + 1, time.monotonic() - start
        if done % 100 == 0 or done == 1:
            print(
                f"step {done:5d}  loss {value:.4f}  ema-loss {smoothed:.4f}  lr {lr:.2e}  "
                f"{elapsed / 60:.1f} min  {1000 * elapsed / done:.0f} ms/step",
                flush=True,
            )
    record = {"steps": args.steps, "final_loss_smoothed": round(smoothed, 5)}
    record["seconds"] = round(time.monotonic() - start, 1)
    save(ema_model, ema_prompts, args, record)
    print(f"saved {args.out / WEIGHTS} after {args.steps} steps, {record['seconds'] / 60:.1f} min")


def main() -> None:
    """Parse the flags, pin the thread count, train."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
