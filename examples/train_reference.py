"""Train the reference model smoothcache ships: a small class-conditional DiT on sklearn digits.

No pretrained DiT can be downloaded in this project's environment, so the quality story (the demo,
the quality-versus-speed benchmark) rests on this model. It is a diffusers
``DiTTransformer2DModel`` trained on the 1,797 8x8 handwritten digits that scikit-learn ships, with
epsilon prediction and a null class for classifier-free guidance. Run (about 13 minutes on 2 CPU
cores, well under a minute on a GPU):

    python examples/train_reference.py --steps 5000 --out smoothcache/reference

Then write the model card and the sample grid for the weights just saved (the card step loads the
weights through ``smoothcache.reference``, exactly as users do):

    python examples/train_reference.py --card-only --out smoothcache/reference

Pitfalls this script handles (each cost a failed run once):

- every ``BasicTransformerBlock`` has its own label embedder with a built-in 10% label dropout,
  drawn independently per block in train mode (and once more in the output head, which reuses
  block 0's embedder): labels would never be dropped consistently. The embedders' dropout is set
  to 0 and labels are dropped here, once per sample, to the null class ``num_classes``;
- ``out_channels`` is passed explicitly so nothing mistakes half the output for a learned sigma;
- the timestep is a 1-D tensor, one entry per sample.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import textwrap
import time
from pathlib import Path

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiTTransformer2DModel
from safetensors.torch import save_file
from sklearn.datasets import load_digits

SEED = 0
NUM_CLASSES = 10
MODEL_CONFIG = {
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 6,
    "sample_size": 8,
    "patch_size": 2,
    "num_embeds_ada_norm": NUM_CLASSES,
    "norm_type": "ada_norm_zero",
}
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000, help="optimizer steps (default 5000)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop after this many minutes instead of --steps (not reproducible across machines)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--out", default="smoothcache/reference", help="output folder")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=250, help="linear warm-up steps")
    parser.add_argument("--label-dropout", type=float, default=0.1)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="skip training; write MODEL_CARD.md and samples.png for the weights in --out",
    )
    parser.add_argument("--card-samples", type=int, default=200, help="samples scored in the card")
    parser.add_argument("--guidance", type=float, default=1.5, help="guidance scale for the card")
    return parser.parse_args()


def digits_tensor() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, 8, 8) floats in [-1, 1] and their labels."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0 * 2.0 - 1.0
    return images, torch.tensor(data.target, dtype=torch.long)


def build_model() -> DiTTransformer2DModel:
    """A fresh model with every built-in label dropout off (labels are dropped in the loop)."""
    model = DiTTransformer2DModel(**MODEL_CONFIG)
    for module in model.modules():
        if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
            module.dropout_prob = 0.0
    return model


def describe(device: torch.device, threads: int) -> str:
    """The training device in words, for the model card."""
    if device.type == "cuda":
        return f"one {torch.cuda.get_device_name(device)} GPU"
    return f"{platform.processor() or platform.machine()} CPU, {threads} threads"


def learning_rate(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(args: argparse.Namespace, out: Path) -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    device = torch.device(args.device)
    images, labels = digits_tensor()
    images, labels = images.to(device), labels.to(device)
    model = build_model().to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    alphas = scheduler.alphas_cumprod.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params:,} parameters, {len(images)} images, device {device}", flush=True)

    total = args.steps
    deadline = None if args.minutes is None else time.monotonic() + 60.0 * args.minutes
    smoothed = None
    start = time.monotonic()
    step = 0
    order = torch.randperm(len(images), generator=gen)
    cursor = 0
    while True:
        if deadline is None and step >= total:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        if cursor + args.batch_size > len(images):
            order = torch.randperm(len(images), generator=gen)
            cursor = 0
        idx = order[cursor : cursor + args.batch_size].to(device)
        cursor += args.batch_size
        x0, y = images[idx], labels[idx].clone()
        n = len(idx)
        drop = torch.rand(n, generator=gen).to(device) < args.label_dropout
        y[drop] = NUM_CLASSES  # the null class: one extra row in every label table
        t = torch.randint(0, SCHEDULER_CONFIG["num_train_timesteps"], (n,), generator=gen)
        t = t.to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1.0 - a).sqrt() * noise
        pred = model(xt, timestep=t, class_labels=y).sample
        loss = F.mse_loss(pred, noise)

        lr = learning_rate(step, total, args.lr, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(args.ema, (1.0 + step) / (10.0 + step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1.0 - decay)

        value = loss.item()
        smoothed = value if smoothed is None else 0.99 * smoothed + 0.01 * value
        step += 1
        if step % 100 == 0 or step == 1:
            elapsed = time.monotonic() - start
            print(
                f"step {step:5d}  loss {value:.4f}  ema-loss {smoothed:.4f}  lr {lr:.2e}  "
                f"{elapsed / 60:.1f} min  {1000 * elapsed / step:.0f} ms/step",
                flush=True,
            )

    seconds = time.monotonic() - start
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in ema.state_dict().items()}
    save_file(state, str(out / "digits-dit.safetensors"), metadata={"format": "pt"})
    config = {
        "model": MODEL_CONFIG,
        "num_classes": NUM_CLASSES,
        "null_class": NUM_CLASSES,
        "pixel_range": [-1.0, 1.0],
        "data": "sklearn.datasets.load_digits (1,797 8x8 images, values 0-16, scaled to [-1, 1])",
        "scheduler": SCHEDULER_CONFIG,
        "training": {
            "seed": SEED,
            "steps": step,
            "batch_size": args.batch_size,
            "optimizer": f"AdamW lr {args.lr} weight_decay 0.01, grad clip 1.0",
            "lr_schedule": f"linear warm-up {args.warmup} steps, cosine decay to 0.1x",
            "label_dropout": args.label_dropout,
            "ema_decay": args.ema,
            "final_loss_smoothed": round(float(smoothed), 5),
            "seconds": round(seconds, 1),
            "device": describe(device, args.threads),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "parameters": params,
            "command": f"python examples/train_reference.py --steps {step} --device {device}",
        },
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"saved {out / 'digits-dit.safetensors'} after {step} steps, {seconds / 60:.1f} min")


def write_card(args: argparse.Namespace, out: Path) -> None:
    """Score samples of the saved weights, save a sample grid and write MODEL_CARD.md."""
    from smoothcache.reference import digits_classifier, load_reference_model, sample, save_grid

    config = json.loads((out / "config.json").read_text())
    model = load_reference_model(out)
    classifier = digits_classifier()
    n = args.card_samples
    labels = torch.arange(n) % NUM_CLASSES
    images = sample(model, labels, num_steps=50, guidance_scale=args.guidance, seed=1)
    accuracy = classifier.accuracy(images, labels)
    save_grid(images[:100], out / "samples.png", nrow=10)
    train_info, model_info = config["training"], config["model"]
    bullets = [
        f"**Data**: {config['data']}, all 10 classes, no augmentation.",
        f"**Architecture**: DiT, native 8x8, {model_info['in_channels']} channel, patch "
        f"{model_info['patch_size']} (16 tokens), {model_info['num_layers']} blocks, "
        f"{model_info['num_attention_heads']} heads x {model_info['attention_head_dim']}, "
        f"adaLN-Zero, `out_channels=1` (no learned sigma); {train_info['parameters']:,} "
        "parameters, stored as float32 safetensors.",
        "**Conditioning**: `num_embeds_ada_norm=10`; class 10 is the null class for "
        "classifier-free guidance (each label table has one extra row). Labels were dropped to "
        f"the null class for {train_info['label_dropout']:.0%} of samples, once per sample; the "
        "blocks' own label dropout is off.",
        "**Diffusion**: epsilon prediction, 1,000 training steps, `squaredcos_cap_v2` betas.",
        f"**Training**: {train_info['steps']:,} steps of batch {train_info['batch_size']}, "
        f"{train_info['optimizer']}, {train_info['lr_schedule']}, EMA {train_info['ema_decay']} "
        f"(the EMA weights are shipped), seed {train_info['seed']}: "
        f"{train_info['seconds'] / 60:.1f} minutes on {train_info['device']}, torch "
        f"{train_info['torch']}, diffusers {train_info['diffusers']}. Final training loss "
        f"(exponential moving average, 0.99): {train_info['final_loss_smoothed']:.4f}. On CPU "
        "the script needs about 135 ms per step on 2 otherwise idle cores (measured for the "
        "same recipe when the project was planned), about 11 minutes for 5,000 steps.",
        "**Sampling**: `smoothcache.reference.sample`, a DDIM loop written here (50 steps, "
        "`trailing` spacing, `clip_sample=True` with `use_clipped_model_output=True`), guidance "
        f"scale {args.guidance:g} as one doubled batch `[cond, uncond]`, one model call per "
        "step. diffusers' `DiTPipeline` cannot guide this model: it hard-codes the null class "
        "1000.",
        "**Quality**: a scikit-learn MLP trained on 75% of the real digits "
        f"(`smoothcache.reference.digits_classifier`, {classifier.test_accuracy:.1%} on the "
        f"other 25%) recognises **{accuracy:.1%}** of {n} samples (classes 0-9 in turn, seed 1).",
    ]
    intro = (
        "A small class-conditional Diffusion Transformer (diffusers `DiTTransformer2DModel`) "
        "trained on handwritten digits, shipped so that the demo and the quality-versus-speed "
        "benchmark run without downloading anything. It is a test bed for caching, not a "
        "generative model worth using."
    )
    card = "\n".join(
        [
            "# digits-dit: the smoothcache reference model",
            "",
            textwrap.fill(intro, 98),
            "",
            *(textwrap.fill(b, 98, initial_indent="- ", subsequent_indent="  ") for b in bullets),
            "",
            "Load it with:",
            "",
            "```python",
            "from smoothcache.reference import load_reference_model, sample",
            "",
            "model = load_reference_model()",
            "images = sample(model, labels=[0, 1, 2, 3], num_steps=50, seed=0)  # (4, 1, 8, 8)",
            "```",
            "",
            f"Samples at guidance {args.guidance:g} (ten per row, one class per column):",
            "",
            "![samples](samples.png)",
            "",
            textwrap.fill(
                f"Regenerate the weights with `{train_info['command']}` (seed and step count "
                "fixed) and this card with `python examples/train_reference.py --card-only`.",
                98,
            ),
            "",
        ]
    )
    (out / "MODEL_CARD.md").write_text(card)
    print(f"classifier accuracy on {n} samples: {accuracy:.3f}; wrote {out / 'MODEL_CARD.md'}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.card_only:
        train(args, out)
    write_card(args, out)


if __name__ == "__main__":
    main()
