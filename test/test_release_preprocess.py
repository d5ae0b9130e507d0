"""Our preprocessing against the release's, built the way the release builds it.

The reference follows cobra/models/backbones/vision/dinosiglip_vit.py: each tower's timm data
config and `timm.data.create_transform(..., is_training=False)`, SigLIP's first Resize replaced by
one to the model's size, and per strategy: resize-naive swaps the first Resize for Resize((S, S));
resize-crop keeps the defaults; letterbox puts prismatic's LetterboxPad (fill `int(mean * 255)`)
first.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import timm
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import Compose, Normalize, Resize

from cobra_ros.model.config import preset
from cobra_ros.model.vision import Preprocess, create_tower

SIZE = 112
SHAPES = [(360, 640), (480, 640), (97, 131), (500, 333), (61, 50), (112, 112), (113, 300)]


class LetterboxPad:
    """prismatic's LetterboxPad (base_vision.py): one border on both sides of the short edge."""

    def __init__(self, fill):
        self.fill = fill

    def __call__(self, image):
        (w, h), side = image.size, max(image.size)
        pad_w, pad_h = int((side - w) / 2), int((side - h) / 2)
        return TF.pad(image, [pad_w, pad_h, pad_w, pad_h], fill=self.fill, padding_mode="constant")


def release_transforms(strategy: str) -> dict[str, Compose]:
    cfg = preset("tiny")
    out = {}
    for name in ("dino", "siglip"):
        tower = create_tower(replace(getattr(cfg, name), image_size=SIZE))
        data_cfg = timm.data.resolve_model_data_config(tower)
        data_cfg["input_size"] = (3, SIZE, SIZE)
        default = timm.data.create_transform(**data_cfg, is_training=False)
        if name == "siglip":  # the release's fix: SigLIP's default resizes past the crop
            default = Compose(
                [
                    Resize(SIZE, interpolation=default.transforms[0].interpolation),
                    *default.transforms[1:],
                ]
            )
        first = default.transforms[0]
        assert isinstance(first, Resize)
        if strategy == "resize-naive":
            out[name] = Compose(
                [Resize((SIZE, SIZE), interpolation=first.interpolation), *default.transforms[1:]]
            )
        elif strategy == "resize-crop":
            out[name] = default
        else:
            fill = tuple(int(x * 255) for x in data_cfg["mean"])
            out[name] = Compose([LetterboxPad(fill), *default.transforms])
    return out


def ours(strategy: str, resample: str = "pil") -> Preprocess:
    cfg = preset("tiny")
    cfg = replace(
        cfg,
        dino=replace(cfg.dino, image_size=SIZE),
        siglip=replace(cfg.siglip, image_size=SIZE),
        image_resize_strategy=strategy,
        resample=resample,
    )
    return Preprocess(cfg)


def before_normalize(transform: Compose, image: np.ndarray) -> np.ndarray:
    """The reference's uint8 pixels: every step up to Normalize, then x 255."""
    steps = [t for t in transform.transforms if not isinstance(t, Normalize)]
    x = Compose(steps)(Image.fromarray(image))
    return (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("strategy", ["resize-naive", "resize-crop", "letterbox"])
def test_pixels_equal_the_release_pipeline(strategy):
    reference, pre = release_transforms(strategy), ours(strategy)
    worst = 0
    for i, shape in enumerate(SHAPES):
        image = np.random.default_rng(i).integers(0, 256, (*shape, 3), dtype=np.uint8)
        for name in ("dino", "siglip"):
            expected = before_normalize(reference[name], image)
            got = pre.resized(image, pre.fills[name])
            assert got.shape == expected.shape == (SIZE, SIZE, 3), (shape, name)
            worst = max(worst, int(np.abs(got.astype(int) - expected).max()))
    print(f"\n{strategy}: max |difference| over {len(SHAPES)} sizes x 2 towers = {worst} levels")
    assert worst <= 1


@pytest.mark.parametrize("strategy", ["resize-naive", "letterbox"])
def test_normalised_tensors_equal_the_release_pipeline(strategy):
    reference, pre = release_transforms(strategy), ours(strategy)
    images = [
        np.random.default_rng(10 + i).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        for i in range(3)
    ]
    got = pre(torch.from_numpy(np.stack(images)))
    for name in ("dino", "siglip"):
        expected = torch.stack([reference[name](Image.fromarray(im)) for im in images])
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], expected, atol=1e-6, rtol=0)


def test_letterbox_fill_is_the_truncated_mean():
    pre = ours("letterbox")
    assert pre.fills == {"dino": (123, 116, 103), "siglip": (127, 127, 127)}
    wide = np.zeros((20, 112, 3), np.uint8)  # the pad rows are all fill
    out = pre.resized(wide, pre.fills["siglip"])
    assert (out[:30] == 127).all() and (out[-30:] == 127).all()


def test_torch_resampler_is_what_the_bundled_model_keeps():
    """The resampler the bundled model was trained with is not the release's (most apart when
    enlarging): it is kept only for models whose config says so."""
    reference, legacy = release_transforms("resize-naive")["dino"], ours("resize-naive", "torch")
    worst = 0
    for i, shape in enumerate(SHAPES):
        image = np.random.default_rng(i).integers(0, 256, (*shape, 3), dtype=np.uint8)
        diff = legacy.resized(image).astype(int) - before_normalize(reference, image)
        worst = max(worst, int(np.abs(diff).max()))
    print(f"\ntorch antialiased bicubic vs the release: max |difference| {worst} levels")
    assert worst > 1
