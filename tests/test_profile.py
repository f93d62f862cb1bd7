"""bench.profile: both counters agree with hand-computed MACs on plain layers, the report
shows the published figures with the right percentage, and the CLI runs."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from bench.profile import Profile, count_macs, count_params, format_profile, profile

ROOT = Path(__file__).resolve().parents[1]


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(16, 4, bias=False)

    def predict(self, x):
        y = self.conv(x)  # (1, 8, 16, 16)
        return self.fc(y)  # Linear over the last dim


def test_counters_match_hand_count():
    macs_conv = 8 * 3 * 3 * 3 * 16 * 16
    macs_fc = 1 * 8 * 16 * 16 * 4
    fv, tc = count_macs(ConvNet(), torch.rand(1, 3, 16, 16))
    assert fv == macs_conv + macs_fc
    assert tc == macs_conv + macs_fc
    assert count_params(ConvNet()) == 8 * 3 * 9 + 16 * 4


def test_fused_attention_is_counted_like_the_explicit_form():
    from train.models.blocks.attention import MultiHeadAttention

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = MultiHeadAttention(32, heads=4)

        def predict(self, x):
            return self.attn(x.flatten(2).transpose(1, 2))

    model = Attn().eval()
    x = torch.rand(1, 32, 6, 7)
    fused = count_macs(model, x)
    model.attn.fused = False
    explicit = count_macs(model, x)
    n = 42
    projections = 4 * n * 32 * 32
    assert explicit[0] == projections + 2 * n * n * 32  # Q K^T and (attn) V
    assert fused[0] == explicit[0]
    assert fused[1] == explicit[1]


def test_profile_small_model_is_consistent():
    prof = profile("m2sformer", small=True)
    assert prof.input_size == 64 and prof.params_m > 0
    assert prof.gflops == pytest.approx(2 * prof.gmacs_fvcore)
    # torch's counter skips norm / upsample ops that fvcore counts
    assert 0.8 * prof.gmacs_fvcore <= prof.gmacs_torch <= 1.01 * prof.gmacs_fvcore
    # the component breakdown accounts for the whole model
    assert sum(p for p, _ in prof.components.values()) == pytest.approx(prof.params_m, rel=1e-9)
    parts = sum(g for _, g in prof.components.values())
    assert 0.9 * prof.gmacs_fvcore <= parts <= prof.gmacs_fvcore * (1 + 1e-9)
    assert "encoder" in prof.components and "by component" in format_profile(prof)


def test_report_states_the_difference_to_the_paper():
    text = format_profile(Profile("m2sformer", 256, params_m=27.4 * 1.1, gmacs_fvcore=14.2 / 2, gmacs_torch=7.0))
    assert "params 27.4 (+10.0%)" in text and "FLOPs 14.2 (-50.0%)" in text
    assert "published figures do not match the published code" in text
    parts = format_profile(Profile("m2sformer", 256, 40.0, 10.0, 10.0,
                                   components={"encoder": (30.0, 6.0), "decoder": (10.0, 4.0)}))
    assert "gap: params 40.00 vs 27.4: 'encoder' alone holds 30.00 (75% of ours)" in parts
    assert "GMACs 10.00 vs 14.2: 'encoder' alone holds 6.00 (60% of ours)" in parts
    other = format_profile(Profile("m2sformer", 64, 1.0, 0.1, 0.1))
    assert "other sizes: [256]" in other


def test_cli_small(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.profile", "--model", "m2sformer", "--small"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "GMACs (fvcore)" in proc.stdout and "params" in proc.stdout
