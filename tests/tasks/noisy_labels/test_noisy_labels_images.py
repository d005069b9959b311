"""The paper-scale image path (ResNet-18, crop+flip, frozen BN in stage two) on a few random
images; on CPU here, and on CUDA too where a GPU is present."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nl_helpers import FakeCtx
from tasks.noisy_labels.data import Arrays
from tasks.noisy_labels.models import build_model
from tasks.noisy_labels.train import make_train_data, random_crop_flip, train_coteach, train_stage_one

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class InMemoryCtx(FakeCtx):
    """Keeps checkpoints by reference: serialising ResNet-18 states would dominate this test."""

    def checkpoint(self, state):
        self.store["state"] = dict(state)
        self.n_checkpoints += 1

    def restore(self):
        return self.store.get("state")


def test_random_crop_flip_matches_a_manual_crop():
    x = torch.rand(6, 32, 32, 3)
    gen = torch.Generator().manual_seed(5)
    out = random_crop_flip(x, gen)
    gen = torch.Generator().manual_seed(5)
    oy = torch.randint(0, 9, (6,), generator=gen)
    ox = torch.randint(0, 9, (6,), generator=gen)
    flip = torch.rand(6, generator=gen) < 0.5
    padded = F.pad(x, (0, 0, 4, 4, 4, 4))
    for i in range(6):
        crop = padded[i, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        assert torch.equal(out[i], crop.flip(1) if flip[i] else crop)


def image_arrays(seed=0, side=8):
    """Random images, 8x8 to keep ResNet-18 cheap on CPU (its strides work for any side >= 8)."""
    rng = np.random.default_rng(seed)
    img = lambda n: rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)  # noqa: E731
    lab = lambda n: np.arange(n) % 10  # noqa: E731
    return Arrays(img(20), lab(20), img(10), lab(10), img(10), lab(10), 10, "image")


@pytest.mark.parametrize("device", DEVICES)
def test_resnet_stage_one_and_frozen_bn_finetune(device, tmp_path):
    data = make_train_data(image_arrays(), "cifar10", {"noise": "symmetric", "rate": 0.5}, 0, device, augment=True)
    hp = {"epochs": 1, "lr": 0.01, "batch_size": 8, "feature_dim": 512, "sigma": 10.0, "warmup_iters": 0,
          "finetune_epochs": 1, "finetune_lr": 0.001, "finetune_freeze_bn": True}
    ctx = InMemoryCtx(0, tmp_path / "a")
    ctx.device = device
    res = train_stage_one(data, hp, "nested", ctx, "resnet18", "nested_dropout[sigma=10.0]")
    assert res.status == "ok" and 1 <= res.metric("k_star") <= 512
    assert len(ctx.curves["acc_vs_k"]) == 512

    nets = [build_model("resnet18", 3, 10, 512, "nested", sigma=10.0).to(device) for _ in range(2)]
    bn_before = nets[0].features.bn1.running_mean.clone()
    ctx2 = InMemoryCtx(0, tmp_path / "b")
    ctx2.device = device
    res2 = train_coteach(data, hp, nets, ctx2, finetune=True, variant="nested_coteach", forget_rate=0.5, ramp_epochs=0)
    assert res2.status == "ok"
    assert torch.equal(nets[0].features.bn1.running_mean, bn_before)  # BN statistics frozen in stage two
