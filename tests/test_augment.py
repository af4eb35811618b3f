import pytest
import torch

from mlp_sweep.augment import Batcher, Mixer, random_crop

MEAN = torch.full((1, 3, 1, 1), 120.0)
STD = torch.full((1, 3, 1, 1), 60.0)
FULL = dict(flip=True, crop_padding=4, brightness=0.2, saturation=0.2, rotation=10.0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def augment(x, g, mean=MEAN, std=STD, max_value=255.0, **params):
    """All of x through a Batcher for one epoch, in order."""
    return Batcher(x, mean=mean, std=std, max_value=max_value, **params)(torch.arange(len(x)), g)


def test_full_augmentation_keeps_shape_and_dtype():
    x = torch.randn(64, 3, 32, 32)
    out = augment(x, gen(), **FULL)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


def test_each_image_draws_its_own_transform():
    x = torch.randn(1, 3, 32, 32).expand(64, 3, 32, 32).contiguous()
    out = augment(x, gen(), **FULL)
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) > 32


def test_same_seed_same_batch():
    x = torch.randn(16, 3, 32, 32)
    a = augment(x, gen(3), **FULL)
    b = augment(x, gen(3), **FULL)
    assert torch.equal(a, b)


def test_flip_gives_the_image_or_its_mirror_drawn_per_image():
    x = torch.randn(200, 3, 8, 8)
    original = x.clone()
    batcher = Batcher(
        x, mean=MEAN, std=STD, max_value=255.0, flip=True, crop_padding=0, brightness=0.0, saturation=0.0, rotation=0.0
    )
    g, idx, seen = gen(), torch.arange(200), []
    for _ in range(2):
        out = batcher(idx, g)
        same = (out == x).flatten(1).all(1)
        mirrored = (out == x.flip(3)).flatten(1).all(1)
        assert (same | mirrored).all()
        assert 60 < mirrored.sum() < 140
        seen.append(mirrored)
    assert 60 < (seen[0] != seen[1]).sum() < 140  # drawn afresh for every batch
    assert torch.equal(x, original)  # the training set itself is never modified


def test_alternate_flip_shows_each_image_the_other_way_in_the_next_epoch():
    x = torch.randn(200, 3, 8, 8)
    batcher = Batcher(
        x,
        mean=MEAN,
        std=STD,
        max_value=255.0,
        flip="alternate",
        crop_padding=0,
        brightness=0.0,
        saturation=0.0,
        rotation=0.0,
    )
    g, epochs = gen(), []
    for _ in range(3):  # three epochs, each a shuffled pass in batches of 64
        order, mirrored = torch.randperm(200, generator=g), torch.zeros(200, dtype=torch.bool)
        for i in range(0, 200, 64):
            idx = order[i : i + 64]
            out = batcher(idx, g)
            assert ((out == x[idx]).flatten(1).all(1) | (out == x[idx].flip(3)).flatten(1).all(1)).all()
            mirrored[idx] = (out == x[idx].flip(3)).flatten(1).all(1)
        epochs.append(mirrored)
    assert 60 < epochs[0].sum() < 140  # the first epoch: a coin per image
    assert torch.equal(epochs[1], ~epochs[0]) and torch.equal(epochs[2], epochs[0])


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    out = random_crop(x, 2, gen(1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


@pytest.mark.parametrize("kind", ["brightness", "saturation", "rotation"])
def test_colour_and_rotation_change_images_but_stay_in_range(kind):
    x = (torch.rand(8, 3, 32, 32) * 255 - MEAN) / STD
    params = dict(flip=False, crop_padding=0, brightness=0.0, saturation=0.0, rotation=0.0)
    params[kind] = 10.0 if kind == "rotation" else 0.5
    out = augment(x, gen(), **params)
    assert not torch.allclose(out, x)
    raw = out * STD + MEAN
    assert raw.min() >= -1e-3 and raw.max() <= 255 + 1e-3


def test_single_channel_images_skip_saturation():
    x = torch.randn(4, 1, 8, 8)
    out = augment(
        x,
        gen(),
        mean=torch.zeros(1, 1, 1, 1),
        std=torch.ones(1, 1, 1, 1),
        max_value=16.0,
        flip=False,
        crop_padding=0,
        brightness=0.0,
        saturation=0.5,
        rotation=0.0,
    )
    assert torch.equal(out, x)


def test_batcher_selects_the_indexed_images():
    x = torch.randn(10, 3, 32, 32)
    idx = torch.tensor([7, 2, 2])
    plain = Batcher(
        x, mean=MEAN, std=STD, max_value=255.0, flip=False, crop_padding=0, brightness=0.0, saturation=0.0, rotation=0.0
    )
    assert torch.equal(plain(idx, gen()), x[idx])
    cropped = Batcher(
        x, mean=MEAN, std=STD, max_value=255.0, flip=False, crop_padding=4, brightness=0.0, saturation=0.0, rotation=0.0
    )(idx, gen())
    # a crop keeps a 24x24 block of the source image whatever the shift
    for out, i in zip(cropped, idx, strict=True):
        assert any(
            torch.equal(out[:, 4:28, 4:28], x[i, :, 4 + dy : 28 + dy, 4 + dx : 28 + dx])
            for dy in range(-4, 5)
            for dx in range(-4, 5)
        )


def test_mixup_mixes_images_and_labels_in_the_same_share():
    n = 16
    x = torch.eye(n).reshape(n, 1, 1, n)  # image i is a one at pixel i: a mix shows who went in
    y = torch.arange(n)  # a class of its own each
    mixed, target = Mixer(mixup=0.4, cutmix=0.0, n_classes=n, seed=0)(x.clone(), y, gen())
    weights = mixed.reshape(n, n)
    assert torch.allclose(weights, target)  # the same partners, in the same shares
    assert torch.allclose(target.sum(1), torch.ones(n))
    own = target.diagonal()
    assert (target > 0).sum(1).max() == 2 and len(set(own.tolist())) == 1  # one lam for the batch
    assert 0 < own[0] < 1


def test_cutmix_pastes_a_box_and_labels_by_its_area():
    n = 12
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 8, 8).clone()  # image i is all i
    y = torch.arange(n)
    mixer = Mixer(mixup=0.0, cutmix=1.0, n_classes=n, seed=3)
    for _ in range(5):
        mixed, target = mixer(x.clone(), y, gen())
        for i in range(n):
            values, counts = mixed[i].unique(return_counts=True)
            shares = dict(zip(values.long().tolist(), (counts / 64).tolist(), strict=True))
            expected = {c: w for c, w in enumerate(target[i].tolist()) if w > 0}
            assert shares.keys() == expected.keys() and len(shares) <= 2
            assert all(abs(shares[c] - expected[c]) < 1e-6 for c in shares)
        pasted = (mixed[0] != 0).squeeze(0).nonzero()
        if len(pasted):  # one rectangle
            (r0, c0), (r1, c1) = pasted.min(0).values, pasted.max(0).values
            assert len(pasted) == (r1 - r0 + 1) * (c1 - c0 + 1)


def test_mixup_and_cutmix_together_use_one_of_them_a_batch():
    n = 8
    x = torch.randn(n, 1, 8, 8)
    mixer = Mixer(mixup=1.0, cutmix=1.0, n_classes=n, seed=0)
    kinds = set()
    for _ in range(20):
        mixed, _ = mixer(x.clone(), torch.arange(n), gen())
        kinds.add("cutmix" if bool(((mixed == x).all(1).flatten(1).any(1)).all()) else "mixup")
    assert kinds == {"mixup", "cutmix"}
