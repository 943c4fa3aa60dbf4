"""Train the second digits DiT: same architecture as ``smoothcache.reference``, another recipe.

A benchmark fixture, not part of the installed package: a class-conditional
``DiTTransformer2DModel`` on scikit-learn's 1,797 8x8 digits, built exactly like the reference
model (6 blocks, 4 heads x 32, patch 2, adaLN-Zero, ``out_channels=1``, null class 10 for
classifier-free guidance) but trained differently: the noise schedule, prediction type, learning
rate schedule, EMA and length are flags, and the defaults are the recipe whose weights sit beside
this file (``README.md`` says why this one). Run::

    python -m benchmarks.second_model.train --out benchmarks/second_model

``--snapshots 1000,2000 --snapshot-dir DIR`` also saves the model as it is after those steps
(``DIR/step-01000`` with the EMA weights, ``DIR/step-01000-raw`` with the raw ones when EMA is
on), each a complete model folder. With the constant learning rate the snapshot after ``N``
steps is the model a run of ``--steps N`` saves, so one run explores several lengths.

Handled as in ``examples/train_reference.py``: labels are dropped to the null class once per
sample here (every block's own label embedder drops labels independently, so its dropout is set
to 0), ``out_channels`` is explicit, and the timestep is a 1-D tensor, one entry per sample.
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
from diffusers import DDPMScheduler, DiTTransformer2DModel
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from benchmarks.common.timing import device_line
from smoothcache.reference import reference_config

SEED = 0
NUM_CLASSES = 10
WEIGHTS = "digits-dit.safetensors"  # the name smoothcache.reference.load_reference_model reads
MODEL_CONFIG: dict[str, Any] = reference_config()["model"]  # the reference architecture
DEFAULT_OUT = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    """The command line; the defaults are the recipe of the weights beside this file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2250, help="optimizer steps (2250)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument(
        "--beta-schedule",
        default="squaredcos_cap_v2",
        choices=("linear", "scaled_linear", "squaredcos_cap_v2"),
        help="training betas, diffusers' names (default squaredcos_cap_v2)",
    )
    parser.add_argument(
        "--prediction-type",
        default="sample",
        choices=("epsilon", "v_prediction", "sample"),
        help="what the model predicts (default sample: the clean image)",
    )
    parser.add_argument(
        "--images-per-class",
        type=int,
        default=0,
        help="train on the first N digits of each class only (default 0: all 1,797)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=250, help="linear warm-up steps")
    parser.add_argument(
        "--lr-schedule",
        default="constant",
        choices=("constant", "cosine"),
        help="after warm-up: constant, or cosine decay to 0.1x over --steps",
    )
    parser.add_argument("--label-dropout", type=float, default=0.1)
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay; 0 saves raw weights")
    parser.add_argument("--snapshots", default="", help="comma-separated steps to snapshot at")
    parser.add_argument("--snapshot-dir", type=Path, help="where snapshots go (default --out)")
    return parser.parse_args()


def digits_tensor(per_class: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits as ``(N, 1, 8, 8)`` floats in [-1, 1], and their labels.

    All 1,797 of them, or with ``per_class`` the first that many of each class (in
    ``load_digits`` order), so a subset needs no random numbers.
    """
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0 * 2.0 - 1.0
    labels = torch.tensor(data.target, dtype=torch.long)
    if per_class > 0:
        keep = torch.cat([(labels == c).nonzero()[:per_class, 0] for c in range(NUM_CLASSES)])
        keep = keep.sort().values
        images, labels = images[keep], labels[keep]
    return images, labels


def data_line(per_class: int) -> str:
    """The training data in words, for ``config.json``."""
    source = "sklearn.datasets.load_digits (1,797 8x8 images, values 0-16, scaled to [-1, 1])"
    if per_class > 0:
        count = len(digits_tensor(per_class)[0])
        return f"{source}, only the first {per_class} of each class ({count} images)"
    return source


def build_model() -> DiTTransformer2DModel:
    """A fresh model with every built-in label dropout off (labels are dropped in the loop)."""
    model = DiTTransformer2DModel(**MODEL_CONFIG)
    for module in model.modules():
        if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
            module.dropout_prob = 0.0
    return model


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then constant or cosine decay to a tenth of the base rate."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.lr_schedule == "constant":
        return args.lr
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def target(
    x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the model learns to output for ``x_t = sqrt(a) x0 + sqrt(1 - a) noise``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    return alpha_bar.sqrt() * noise - (1.0 - alpha_bar).sqrt() * x0  # v_prediction


def save(
    model: torch.nn.Module,
    folder: Path,
    args: argparse.Namespace,
    record: dict[str, Any],
    ema: float | None,
) -> None:
    """Write ``model``'s weights and a ``config.json`` shaped like the reference model's."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    steps = record["steps"]
    command = (
        f"python -m benchmarks.second_model.train --steps {steps} "
        f"--beta-schedule {args.beta_schedule} --prediction-type {args.prediction_type} "
        f"--images-per-class {args.images_per_class} "
        f"--lr {args.lr:g} --lr-schedule {args.lr_schedule} --ema {ema or 0:g} "
        f"--threads {args.threads}"
    )
    lr_schedule = f"linear warm-up {args.warmup} steps, then " + (
        "constant" if args.lr_schedule == "constant" else f"cosine decay to 0.1x at step {steps}"
    )
    config = {
        "model": MODEL_CONFIG,
        "num_classes": NUM_CLASSES,
        "null_class": NUM_CLASSES,
        "pixel_range": [-1.0, 1.0],
        "data": data_line(args.images_per_class),
        "scheduler": {
            "num_train_timesteps": 1000,
            "beta_schedule": args.beta_schedule,
            "prediction_type": args.prediction_type,
        },
        "training": {
            "seed": SEED,
            **record,
            "batch_size": args.batch_size,
            "optimizer": f"AdamW lr {args.lr:g} weight_decay 0.01, grad clip 1.0",
            "lr_schedule": lr_schedule,
            "label_dropout": args.label_dropout,
            "ema_decay": ema,
            "device": device_line(torch.device(args.device)),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "command": command,
        },
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def train(args: argparse.Namespace) -> None:
    """The training loop; saves the final model to ``--out`` and any snapshots on the way."""
    torch.manual_seed(SEED)
    device = torch.device(args.device)
    images, labels = digits_tensor(args.images_per_class)
    images, labels = images.to(device), labels.to(device)
    model = build_model().to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False) if args.ema > 0 else None
    betas = DDPMScheduler(num_train_timesteps=1000, beta_schedule=args.beta_schedule)
    alphas = betas.alphas_cumprod.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    snapshots = {int(s) for s in args.snapshots.split(",") if s.strip()}
    snapshot_dir = args.snapshot_dir or args.out
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(images)} images")

    smoothed = 0.0
    start = time.monotonic()
    order = torch.randperm(len(images), generator=gen)
    cursor = 0
    for step in range(args.steps):
        if cursor + args.batch_size > len(images):
            order = torch.randperm(len(images), generator=gen)
            cursor = 0
        idx = order[cursor : cursor + args.batch_size].to(device)
        cursor += args.batch_size
        x0, y = images[idx], labels[idx].clone()
        n = len(idx)
        drop = torch.rand(n, generator=gen).to(device) < args.label_dropout
        y[drop] = NUM_CLASSES  # the null class: one extra row in every label table
        t = torch.randint(0, 1000, (n,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1.0 - a).sqrt() * noise
        pred = model(xt, timestep=t, class_labels=y).sample
        loss = F.mse_loss(pred, target(x0, noise, a, args.prediction_type))

        lr = learning_rate(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                decay = min(args.ema, (1.0 + step) / (10.0 + step))
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1.0 - decay)

        value = loss.item()
        smoothed = value if step == 0 else 0.99 * smoothed + 0.01 * value
        done = step + 1
        elapsed = time.monotonic() - start
        if done % 100 == 0 or done == 1:
            print(
                f"step {done:5d}  loss {value:.4f}  ema-loss {smoothed:.4f}  lr {lr:.2e}  "
                f"{elapsed / 60:.1f} min  {1000 * elapsed / done:.0f} ms/step",
                flush=True,
            )
        record = {"steps": done, "final_loss_smoothed": round(smoothed, 5)}
        record["seconds"] = round(elapsed, 1)
        if done in snapshots and done < args.steps:
            name = f"step-{done:05d}"
            final = ema if ema is not None else model
            save(final, snapshot_dir / name, args, record, args.ema or None)
            if ema is not None:
                save(model, snapshot_dir / f"{name}-raw", args, record, None)
            print(f"snapshot {snapshot_dir / name}", flush=True)

    save(ema if ema is not None else model, args.out, args, record, args.ema or None)
    if ema is not None and args.steps in snapshots:
        save(model, snapshot_dir / f"step-{args.steps:05d}-raw", args, record, None)
    print(f"saved {args.out / WEIGHTS} after {args.steps} steps, {elapsed / 60:.1f} min")


def main() -> None:
    """Parse the flags, pin the thread count, train."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
