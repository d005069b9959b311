"""The functional dual encoder: the masked tensor sets, the tokenizer, and the paper-scale loading
path - a tiny randomly initialised ``transformers`` CLIP converted into the functional model gives
the same image and text features as ``transformers`` itself."""

from __future__ import annotations

import pytest
import torch

from tasks.mask_tuning import model as M


def test_attention_and_mlp_mask_sets_hold_the_same_number_of_weights(tiny_cfg, tiny_weights):
    attn, mlp = M.masked_names(tiny_cfg, "attn"), M.masked_names(tiny_cfg, "mlp")
    assert attn[0] == mlp[0] == "visual.conv1.weight"
    assert len(attn) == 1 + 2 * tiny_cfg.layers and all(n.startswith("visual.") for n in attn + mlp)
    count = lambda names: sum(tiny_weights[n].numel() for n in names)
    assert count(attn) == count(mlp) == 3 * 4 * 4 * tiny_cfg.width + tiny_cfg.layers * 4 * tiny_cfg.width ** 2
    with pytest.raises(ValueError, match="mask target"):
        M.masked_names(tiny_cfg, "norms")


def test_small_model_has_the_cards_size():
    from tasks.mask_tuning.run import small_config

    cfg = small_config({})
    n = sum(torch.Size(s).numel() for s in M.weight_shapes(cfg).values())
    assert 0.2e6 < n < 0.4e6  # card §9: ~0.3M parameters
    assert cfg.tokens == 17  # patch 4 on 16x16: 16 tokens + CLS


def test_tokenizer_places_eos_and_context_slots():
    tok = M.WordTokenizer(["a", "circle", "red"], context=8)
    tokens, eos = tok(["a red circle", "circle"], prefix_slots=2)
    assert tokens[0].tolist() == [1, 0, 0, 3, 5, 4, 2, 0]  # <sos> [ctx ctx] a red circle <eos> <pad>
    assert eos.tolist() == [6, 4]
    with pytest.raises(ValueError, match="vocabulary"):
        tok(["a blue circle"])


def test_masked_forward_changes_only_through_the_masks(tiny_cfg, tiny_weights):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    names = M.masked_names(tiny_cfg, "attn")
    scores = M.init_scores(tiny_weights, names)
    base = M.encode_image(tiny_weights, x, tiny_cfg)
    assert torch.equal(M.encode_image(M.apply_masks(tiny_weights, scores), x, tiny_cfg), base)
    with torch.no_grad():
        scores[names[1]][0, 0] = 0.0
    w = M.apply_masks(tiny_weights, scores)
    assert w[names[1]][0, 0] == 0 and torch.equal(w[names[1]][1:], tiny_weights[names[1]][1:])
    assert not torch.equal(M.encode_image(w, x, tiny_cfg), base)


@pytest.fixture(scope="module")
def hf_clip():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPConfig(
        text_config={"vocab_size": 50, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "max_position_embeddings": 10, "eos_token_id": 49},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "image_size": 32, "patch_size": 8},
        projection_dim=16)
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_transformers_clip_converts_to_the_same_features(hf_clip):
    from tasks.mask_tuning.paper import config_from_hf, convert_hf_clip

    cfg = config_from_hf(hf_clip.config)
    assert cfg.activation == "quick_gelu" and cfg.tokens == 17 and cfg.mlp_ratio == 2
    w = convert_hf_clip(hf_clip.state_dict(), cfg)
    assert set(w) == set(M.weight_shapes(cfg)) and all(tuple(w[k].shape) == s for k, s in M.weight_shapes(cfg).items())
    px = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[48, 5, 7, 49, 0, 0], [48, 9, 49, 0, 0, 0], [48, 3, 4, 5, 6, 49]])
    eos = torch.tensor([3, 2, 5])
    with torch.no_grad():
        ref_img = hf_clip.get_image_features(pixel_values=px)
        ref_txt = hf_clip.get_text_features(input_ids=ids)
        ref_img = getattr(ref_img, "pooler_output", ref_img)
        ref_txt = getattr(ref_txt, "pooler_output", ref_txt)
        ours_img = M.encode_image(w, px, cfg)
        ours_txt = M.encode_text(w, ids, eos, cfg)
    assert torch.allclose(ours_img, ref_img, atol=1e-5)
    assert torch.allclose(ours_txt, ref_txt, atol=1e-5)
    assert float(M.logit_scale(w)) == pytest.approx(float(hf_clip.logit_scale.detach().exp()))


def test_missing_clip_weights_fail_with_the_fix(monkeypatch, tmp_path):
    from harness.config import ConfigError
    from tasks.mask_tuning.paper import CLIP_ENV, load_clip

    monkeypatch.setenv(CLIP_ENV, str(tmp_path / "no-such-folder"))
    with pytest.raises(ConfigError, match=CLIP_ENV):
        load_clip("openai/clip-vit-base-patch16")
