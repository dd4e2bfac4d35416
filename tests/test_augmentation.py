"""The APGA study's training loop on a tiny cluttered-digits set, no Ray: every method trains and scores,
the masks have the image's shape, and APGA's policy is actually updated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtune.trainables.augmentation import AugmentationConfig, AugmentationRun
from medtune.trainables.classification_data import ClassificationData, cluttered_digits


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    x, y = cluttered_digits(seed=0, canvas=16, clutter=2)
    idx = np.random.default_rng(0).permutation(len(x))
    tr, te = idx[:96], idx[96:160]
    empty = np.zeros((0, *x.shape[1:]), np.float32)
    return ClassificationData(x[tr], y[tr], empty, np.zeros(0, np.int64), x[te], y[te], 10, tuple(map(str, range(10))))


CFG = AugmentationConfig(pretrain_epochs=1, epochs=1, batch_size=32, cutout_size=4)


@pytest.mark.parametrize("method", ["none", "cutout", "gradcam", "apga", "trivialaugment", "randaugment"])
def test_every_method_trains_an_epoch_and_reports(data, method):
    run = AugmentationRun(method, seed=0, data=data, config=CFG)
    out = run.train_epoch()
    assert set(out) == {"epoch", "train_loss", "accuracy", "keep_fraction"}
    assert out["epoch"] == 1 and np.isfinite(out["train_loss"]) and 0.0 <= out["accuracy"] <= 1.0
    if method in ("none", "trivialaugment", "randaugment"):
        assert out["keep_fraction"] == 1.0  # nothing masked
    else:
        assert 0.0 <= out["keep_fraction"] <= 1.0


@pytest.mark.parametrize("method", ["cutout", "gradcam", "apga"])
def test_masks_have_the_images_shape_and_are_binary(data, method):
    run = AugmentationRun(method, seed=0, data=data, config=CFG)
    x = torch.tensor(data.train_images[:8])
    keep = run.masks(x)
    assert keep.shape == (8, 1, 16, 16)
    assert set(torch.unique(keep).tolist()) <= {0.0, 1.0}


def test_cutout_erases_exactly_its_holes(data):
    run = AugmentationRun("cutout", seed=0, data=data, config=CFG)
    keep = run.masks(torch.tensor(data.train_images[:4]))
    assert (keep.view(4, -1).sum(1) == 16 * 16 - 4 * 4).all()  # one 4x4 hole each


def test_apga_updates_its_policy_and_every_method_starts_from_the_same_pretrained_classifier(data):
    runs = {m: AugmentationRun(m, seed=0, data=data, config=CFG) for m in ("none", "apga")}
    a, b = (dict(r.classifier.state_dict()) for r in runs.values())
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same pre-training
    before = [p.detach().clone() for p in runs["apga"].policy.parameters()]
    runs["apga"].train_epoch()
    after = list(runs["apga"].policy.parameters())
    assert any(not torch.equal(x, y) for x, y in zip(before, after))


def test_unknown_method_and_bad_config_are_rejected(data):
    with pytest.raises(ValueError, match="cutot"):
        AugmentationRun("cutot", seed=0, data=data, config=CFG)
    with pytest.raises(ValueError, match="did you mean 'trivialaugment'"):
        AugmentationRun("TrivialAugment", seed=0, data=data, config=CFG)
    with pytest.raises(ValueError, match="randaugment_magnitude=30"):
        AugmentationConfig(randaugment_magnitude=30)
    with pytest.raises(ValueError, match="randaugment_ops=0"):
        AugmentationConfig(randaugment_ops=0)
    with pytest.raises(ValueError, match="did you mean 'densenet'"):
        AugmentationConfig(classifier="densnet")


@pytest.mark.parametrize("method", ["cutout", "apga"])
def test_a_restart_from_the_checkpoint_continues_exactly(data, method):
    """2 epochs, save, 1 more in a fresh run loaded from the save == 3 epochs straight (what a Tune retry relies on)."""
    from medtune.trainables.augmentation import pretrain

    cfg = AugmentationConfig(pretrain_epochs=1, epochs=3, batch_size=32, cutout_size=4)
    start = pretrain(data, cfg, seed=3)
    straight = AugmentationRun(method, 3, data, cfg, pretrained=start)
    for _ in range(3):
        last = straight.train_epoch()
    first = AugmentationRun(method, 3, data, cfg, pretrained=start)
    first.train_epoch()
    first.train_epoch()
    state = first.state_dict()
    resumed = AugmentationRun(method, 3, data, cfg, pretrained=start)
    resumed.load_state_dict(state)
    again = resumed.train_epoch()
    assert again["epoch"] == last["epoch"] == 3
    assert again["train_loss"] == pytest.approx(last["train_loss"], rel=1e-5)
    assert again["accuracy"] == last["accuracy"]
    assert again["keep_fraction"] == pytest.approx(last["keep_fraction"])


@pytest.mark.parametrize("method", ["none", "gradcam", "trivialaugment"])
def test_mask_examples_decode_to_the_test_images_and_their_masks(data, method):
    from medtune.dashboards.apga_report import decode_masks

    run = AugmentationRun(method, 0, data, CFG)
    images, masks = decode_masks(run.mask_examples(n=4))
    assert images.shape == masks.shape == (4, *data.test_images.shape[2:])
    shown = data.test_images[:4]
    if method == "trivialaugment":                              # the augmented test images, nothing erased
        shown = run.augmented(torch.tensor(shown), seed=0).numpy()
    np.testing.assert_array_equal(images, np.round(shown[:, 0] * 255).astype(np.uint8))
    masked = method not in ("none", "trivialaugment")
    expected = run.masks(torch.tensor(data.test_images[:4]))[:, 0].numpy() if masked else np.ones_like(masks)
    np.testing.assert_array_equal(masks, expected.astype(np.uint8))


@pytest.mark.parametrize("method", ["trivialaugment", "randaugment"])
def test_auto_augment_keeps_dtype_shape_range_and_is_seeded(method):
    from medtune.trainables.auto_augment import auto_augment, make_auto_augment

    x = torch.rand(6, 1, 16, 16)
    op = make_auto_augment(method, channels=1)
    before = torch.get_rng_state()
    a, b, c = auto_augment(op, x, 5), auto_augment(op, x, 5), auto_augment(op, x, 6)
    assert torch.equal(torch.get_rng_state(), before)          # torch's global stream is left alone
    assert a.shape == x.shape and a.dtype == x.dtype and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, b)                                    # same seed, same images
    assert not torch.equal(a, c)                                # another seed, other images
    assert not torch.equal(a, x)                                # it did augment
    colour = auto_augment(make_auto_augment(method, channels=3), torch.rand(2, 3, 8, 8), 0)
    assert colour.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="4 channels"):
        make_auto_augment(method, channels=4)


def test_auto_augment_run_draws_from_its_own_checkpointed_stream(data):
    run = AugmentationRun("randaugment", seed=0, data=data, config=CFG)
    x = torch.tensor(data.train_images[:4])
    state = run.state_dict()
    first, second = run.augmented(x), run.augmented(x)
    assert not torch.equal(first, second)                       # a new draw per batch
    again = AugmentationRun("randaugment", seed=0, data=data, config=CFG)
    again.load_state_dict(state)
    assert torch.equal(again.augmented(x), first)               # a restored run draws the same
    other = AugmentationRun("randaugment", seed=1, data=data, config=CFG)
    assert not torch.equal(other.augmented(x), first)           # another trial seed, other images


def test_randaugment_draws_from_the_papers_operations():
    from medtune.trainables.auto_augment import make_auto_augment

    def names(op):
        return {type(m).__name__ for m in op.modules()}

    grey, colour = make_auto_augment("randaugment", 1), make_auto_augment("randaugment", 3)
    assert len(list(grey.children())) == 12 and len(list(colour.children())) == 13
    assert not any("Invert" in n for n in names(colour)) and not any("Saturat" in n for n in names(grey))
    assert any("Saturat" in n for n in names(colour))
    run_ops = make_auto_augment("randaugment", 1, ops=12)        # N = the whole grey list still works
    assert run_ops(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)
