"""M2SFormer: shapes, the training outputs, the difficulty guidance, and faithfulness of
the full-size build to the authors' public code (its frequency rule, zero-padded summed
curvature, biases, eps and edge target; 28,149,291 params less the 284 folded biases)."""
import pytest
import torch

from train.losses import edge_target
from train.models import build_model, get_spec
from train.models.blocks.attention import set_fused_attention
from train.models.blocks.dct import top_frequencies
from train.models.blocks.filters import Sobel
from train.models.m2sformer import AUTHORS, DifficultyText, EdgeAwareDifficulty, M2SFormer, word_vector


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
    calc = EdgeAwareDifficulty("edge_mean", padding="replicate")
    flat = torch.zeros(1, 1, 32, 32)
    assert calc(flat).item() == pytest.approx(0.5)  # no edges -> zero curvature -> sigmoid(0)
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = (8.0 - torch.sqrt((x - 16) ** 2 + (y - 16) ** 2))[None, None]  # logits of a disc
    s_edge = calc(blob)
    s_sum = EdgeAwareDifficulty("sum", padding="replicate")(blob)
    assert s_edge.shape == (1,) and s_edge.item() != pytest.approx(0.5)
    assert s_sum.item() != pytest.approx(s_edge.item())
    with pytest.raises(ValueError):
        EdgeAwareDifficulty("median")


def test_full_size_matches_the_authors_code_param_count():
    model = M2SFormer()
    params = sum(p.numel() for p in model.parameters())
    # authors' code: 28,149,291, of which 4 x 64 skip-conv and 16 + 8 + 4 DGA-conv biases
    # sit before a BatchNorm; we fold those into its running mean instead of building them
    assert params == 28_149_291 - (4 * 64 + 16 + 8 + 4), params
    assert model.encoder.feature_info.channels() == [64, 128, 320, 512]
    old = build_model("m2sformer", **get_spec("m2sformer").variants["paper-text"])
    assert sum(p.numel() for p in old.parameters()) == 28_150_353  # our build before: + q/kv and gate biases


def test_authors_frequency_rule():
    """(32 u) // 7 left to right, the table the authors' code produces (13 of the 16 (u, v)
    pairs differ from FcaNet's 4u; only (0, 0), (0, 4) and (4, 0) agree)."""
    theirs = [(0, 0), (0, 4), (27, 0), (0, 22), (0, 9), (4, 0), (4, 9), (18, 0), (22, 0), (4, 27), (13, 0),
              (0, 18), (0, 27), (0, 13), (13, 22), (9, 9)]
    assert top_frequencies(16, 32, 32, "authors") == theirs
    fcanet = top_frequencies(16, 32, 32, "fcanet")
    assert fcanet[2] == (24, 0) and fcanet[15] == (8, 8)
    assert sum(a != b for a, b in zip(theirs, fcanet)) == 13
    with pytest.raises(ValueError):
        top_frequencies(16, 32, 32, "4u")


def test_zero_padded_sobel_sees_the_frame():
    """A constant map: replicate padding gives no gradient; zero padding gives the Sobel
    column sums at the frame (4 on the left edge, -4 on the right, 3 at a corner)."""
    ones = torch.ones(1, 1, 5, 6)
    gx, gy = Sobel("replicate").gradients(ones)
    assert gx.abs().max() == 0 and gy.abs().max() == 0
    gx, gy = Sobel("zeros").gradients(ones)
    assert gx[0, 0, 2, 0] == 4 and gx[0, 0, 2, -1] == -4 and gx[0, 0, 2, 2] == 0
    assert gx[0, 0, 0, 0] == 3 and gy[0, 0, 0, 2] == 4
    # so the summed curvature of a flat non-zero prior is no longer 0 (sigmoid 0.5) with zeros
    flat = torch.full((1, 1, 16, 16), 2.0)
    assert EdgeAwareDifficulty("sum", padding="replicate")(flat).item() == 0.5
    assert EdgeAwareDifficulty("sum", padding="zeros")(flat).item() != 0.5


def test_defaults_are_the_authors_variant():
    spec = get_spec("m2sformer")
    assert spec.variants["authors"] == AUTHORS
    model = build_model("m2sformer", small=True)
    variant = build_model("m2sformer", small=True, **AUTHORS)
    assert model.state_dict().keys() == variant.state_dict().keys()
    assert model.edge_target == "kornia" and model.difficulty.reduce == "sum"
    assert model.difficulty.sobel.padding == "zeros"
    block = model.decoder[0].block
    assert block.attn.q.bias is None and block.attn.kv.bias is None and block.norm1.eps == 1e-5
    assert all(branch.gate.bias is None for branch in model.m2s.scales)
    old = build_model("m2sformer", small=True, **spec.variants["paper-text"])
    assert old.decoder[0].block.attn.q.bias is not None and old.difficulty.reduce == "edge_mean"


def test_kornia_edge_target_by_hand():
    """A straight step: both rules mark the two pixels beside it (normalised gradient 0.5).
    A lone pixel: "any" marks its 8 neighbours (gradients 2 and sqrt 2), kornia's >= 0.5 on
    the normalised gradient (0.25 and 0.18) marks nothing."""
    step = torch.zeros(1, 1, 6, 8)
    step[..., 4:] = 1
    for rule in ("any", "kornia"):
        band = edge_target(step, rule)
        assert band[0, 0].sum(0).tolist() == [0, 0, 0, 6, 6, 0, 0, 0], rule
    lone = torch.zeros(1, 1, 7, 7)
    lone[0, 0, 3, 3] = 1
    assert edge_target(lone, "any").sum() == 8 and edge_target(lone, "any")[0, 0, 3, 3] == 0
    assert edge_target(lone, "kornia").sum() == 0
    with pytest.raises(ValueError):
        edge_target(lone, "canny")
