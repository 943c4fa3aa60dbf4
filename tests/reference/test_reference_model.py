"""The shipped reference model, its sampler and classifier, and the demo built on them."""

from __future__ import annotations

import io
import json
from importlib import resources

import pytest
import torch

import smoothcache
from smoothcache import reference
from smoothcache.reference import (
    digits_classifier,
    image_grid,
    initial_noise,
    load_reference_model,
    psnr,
    relative_l2,
    sample,
)


@pytest.fixture(scope="module")
def model():
    return load_reference_model()


def test_shipped_files_are_small_and_described():
    folder = resources.files("smoothcache.reference")
    weights = folder / "digits-dit.safetensors"
    assert weights.is_file() and len(weights.read_bytes()) < 10 * 2**20
    card = (folder / "MODEL_CARD.md").read_text()
    assert "load_digits" in card and "samples.png" in card
    assert (folder / "samples.png").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["null_class"] == config["num_classes"] == 10
    assert config["training"]["steps"] > 0


def test_model_has_the_documented_architecture(model):
    cfg = model.config
    assert (cfg.num_layers, cfg.num_attention_heads, cfg.attention_head_dim) == (6, 4, 32)
    assert (cfg.sample_size, cfg.patch_size, cfg.in_channels, cfg.out_channels) == (8, 2, 1, 1)
    assert cfg.num_embeds_ada_norm == 10
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert 2_000_000 < sum(p.numel() for p in model.parameters()) < 2_300_000
    tables = [m for m in model.modules() if hasattr(m, "embedding_table")]
    assert len(tables) == cfg.num_layers
    for table in tables:  # a row for the null class, and no label dropout of its own
        assert table.embedding_table.num_embeddings == 11
        assert table.dropout_prob == 0.0
    assert smoothcache.detect(model).name == "diffusers-dit"


def test_sampling_is_deterministic_and_seeded(model):
    first = sample(model, [0, 1, 2], num_steps=4, seed=3)
    assert first.shape == (3, 1, 8, 8)
    assert first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, sample(model, [0, 1, 2], num_steps=4, seed=3))
    assert not torch.equal(first, sample(model, [0, 1, 2], num_steps=4, seed=4))
    generator = torch.Generator().manual_seed(3)
    assert torch.equal(first, sample(model, [0, 1, 2], num_steps=4, generator=generator))


def test_a_subset_of_a_seeded_batch_resamples_from_its_noise(model):
    labels = [0, 1, 2, 3]
    batch = sample(model, labels, num_steps=4, seed=5)
    noise = initial_noise(model, len(labels), seed=5)
    assert torch.equal(batch, sample(model, labels, num_steps=4, noise=noise))
    picked = [1, 3]
    alone = sample(model, [labels[i] for i in picked], num_steps=4, noise=noise[picked])
    torch.testing.assert_close(alone, batch[picked], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"noise must be shaped \(4, 1, 8, 8\)"):
        sample(model, labels, num_steps=4, noise=noise[:2])
    with pytest.raises(ValueError, match="not both"):
        sample(model, labels, num_steps=4, noise=noise, generator=torch.Generator())


def test_sampling_calls_the_model_once_per_step_with_a_doubled_batch(model):
    calls = []

    def record(_module, args, kwargs):
        calls.append((args[0].shape[0], kwargs["timestep"].shape, kwargs["class_labels"]))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        sample(model, [4, 7], num_steps=3, guidance_scale=2.0)
        sample(model, [4, 7], num_steps=2, guidance_scale=1.0)
    finally:
        handle.remove()
    assert len(calls) == 5
    batch, timestep, labels = calls[0]
    assert batch == 4 and timestep == (4,) and labels.tolist() == [4, 7, 10, 10]
    assert calls[-1][0] == 2 and calls[-1][2].tolist() == [4, 7]  # no guidance, no null class


def test_rejects_labels_outside_the_classes(model):
    with pytest.raises(ValueError, match=r"classes 0\.\.9"):
        sample(model, [10], num_steps=2)


def test_samples_are_recognisable_digits(model):
    labels = torch.arange(20) % 10
    images = sample(model, labels, num_steps=20, seed=0)
    classifier = digits_classifier()
    assert classifier.test_accuracy > 0.9
    assert classifier.accuracy(images, labels) >= 0.8


def test_classifier_features_and_real_data():
    classifier = digits_classifier()
    assert classifier is digits_classifier()  # trained once per process
    assert classifier.real_images.shape == (1797, 1, 8, 8)
    assert classifier.real_images.min() == -1 and classifier.real_images.max() == 1
    features = classifier.features(classifier.real_images[:5])
    assert features.shape == (5, 64) and (features >= 0).all()
    assert classifier.accuracy(classifier.real_images, classifier.real_labels) > 0.95


def test_comparisons():
    a = torch.zeros(2, 1, 8, 8)
    b = a.clone()
    b[0, 0, 0, 0] = 0.5
    assert psnr(a, a) == float("inf")
    assert psnr(b, a) == pytest.approx(10 * torch.log10(torch.tensor(4 / (0.25 / 128))).item())
    c = torch.ones(2, 1, 8, 8)
    assert relative_l2(c, c) == 0
    assert relative_l2(2 * c, c) == pytest.approx(1.0)


def test_image_grid_layout():
    images = -torch.ones(12, 1, 8, 8)
    images[1] = 1.0
    grid = image_grid(images, nrow=5, scale=2, pad=1)
    assert grid.shape == (3 * 17 + 1, 5 * 17 + 1)  # 3 rows of 5 tiles of 16 px, 1 px apart
    assert grid.dtype.name == "uint8"
    assert grid[0, 0] == 128 and grid[1, 1] == 0  # grey padding, black pixel
    assert grid[1, 18] == 255  # the second tile is white
    assert grid[-2, -2] == 128  # the empty last tiles stay grey


def test_caching_changes_the_samples_a_little(model):
    labels = [0, 1, 2, 3]
    plain = sample(model, labels, num_steps=10, seed=0)
    schedule = smoothcache.Schedule.uniform(10, 2, ("attn1", "ff"))
    with smoothcache.enabled(model, schedule) as session:
        cached = sample(model, labels, num_steps=10, seed=0)
    assert session.stats.total_reused > 0
    assert not torch.equal(plain, cached)
    assert psnr(cached, plain) > 20


def test_demo_runs_end_to_end(tmp_path):
    from smoothcache.demo import run_demo

    out = io.StringIO()
    png = tmp_path / "demo.png"
    status = run_demo(
        out_png=png,
        num_samples=4,
        num_steps=10,
        calibration_samples=2,
        repeats=1,
        progress=False,
        out=out,
    )
    text = out.getvalue()
    assert status == 0
    assert "no cache" in text and "PSNR" in text and "tuned for compute <= 0.3" in text
    rows = {line.split("  ")[1]: line for line in text.splitlines() if "SmoothCache, " in line}
    assert set(rows) == {"SmoothCache, the paper's rule", "SmoothCache, tuned"}
    assert all(" dB" in line for line in rows.values())  # each cached row scored
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_bad_sizes():
    from smoothcache.demo import run_demo

    with pytest.raises(ValueError, match="num_steps >= 2"):
        run_demo(num_steps=1)


def test_module_exports():
    assert set(reference.__all__) >= {"load_reference_model", "sample", "digits_classifier"}
