"""M2SFormer: shapes, the training outputs, the difficulty guidance, and faithfulness of
the full-size build to the authors' public code (28.15M params)."""
import pytest
import torch

from train.models import build_model, get_spec
from train.models.blocks.attention import set_fused_attention
from train.models.m2sformer import DifficultyText, EdgeAwareDifficulty, M2SFormer, word_vector


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_model("m2sformer", small=True)


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)])
def test_shapes(small, hw):
    small.eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        prob, score = small.predict(x)
        out = small(x)
    assert prob.shape == (2, 1, *hw) and score.shape == (2, 1)
    assert 0 <= prob.min() and prob.max() <= 1
    assert torch.allclose(score[:, 0], prob.flatten(1).amax(1))
    for name in ("region", "edge", "prior"):
        assert out[name].shape == (2, 1, *hw)
    assert out["difficulty"].shape == (2,)
    assert set(out) == set(get_spec("m2sformer").training_outputs)


def test_training_step_reaches_all_heads(small):
    small.train()
    out = small(torch.rand(2, 3, 64, 64))
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(out[k], target) for k in ("region", "edge", "prior"))
    loss.backward()
    for head in (small.region_head, small.edge_head, small.prior_head):
        assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
        assert head.weight.grad.abs().sum() > 0
    small.zero_grad()


def test_fused_and_explicit_attention_agree(small):
    small.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        set_fused_attention(small, True)
        a = small.predict(x)[0]
        set_fused_attention(small, False)
        b = small.predict(x)[0]
    set_fused_attention(small, True)
    assert torch.allclose(a, b, atol=1e-5)


def test_word_vectors_are_fixed_and_distinct():
    easy, hard = word_vector("easy"), word_vector("hard")
    assert easy.shape == (300,) and torch.equal(easy, word_vector("easy"))
    assert easy.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(easy, hard)


def test_difficulty_selects_the_word_and_where_equals_gather():
    text = DifficultyText()
    hard = torch.tensor([True, False, True])
    gathered = text(hard)
    assert torch.equal(gathered[0], text.table[1]) and torch.equal(gathered[1], text.table[0])
    text.mode = "where"
    assert torch.equal(text(hard), gathered)


def test_difficulty_word_changes_the_prediction(small):
    small.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = small.predict(x)[0]
        old = small.text.table.clone()
        small.load_word_vectors(old[1], old[0])  # swap easy/hard
        b = small.predict(x)[0]
        small.load_word_vectors(old[0], old[1])
    assert not torch.allclose(a, b)


def test_edge_aware_difficulty_ignores_flat_regions():
    calc = EdgeAwareDifficulty("edge_mean")
    flat = torch.zeros(1, 1, 32, 32)
    assert calc(flat).item() == pytest.approx(0.5)  # no edges -> zero curvature -> sigmoid(0)
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = (8.0 - torch.sqrt((x - 16) ** 2 + (y - 16) ** 2))[None, None]  # logits of a disc
    s_edge = calc(blob)
    s_sum = EdgeAwareDifficulty("sum")(blob)
    assert s_edge.shape == (1,) and s_edge.item() != pytest.approx(0.5)
    assert s_sum.item() != pytest.approx(s_edge.item())
    with pytest.raises(ValueError):
        EdgeAwareDifficulty("median")


def test_full_size_matches_the_authors_code_param_count():
    model = M2SFormer()
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - 28.15e6) / 28.15e6 < 0.005, params  # authors' code: 28.15M
    assert model.encoder.feature_info.channels() == [64, 128, 320, 512]
