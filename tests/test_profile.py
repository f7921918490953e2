"""Parameter / MAC / MFLOP / prior counts against the README's model table, and the ``profile`` command."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from blazeface import BlazefaceError, create_model, list_models
from blazeface.cli import main
from blazeface.profiling import profile, profile_model

# The README's model table, at 320 wide by 240 high: params, MACs (M), MFLOPs (seed/thop convention),
# priors at 320x240 and 640x480.
EXPECTED = {
    "blaze": (175_280, 217.3, 238.1, 4200, 16800),
    "blazelite": (138_704, 124.7, 139.7, 4200, 16800),
    "slim": (343_488, 87.5, 98.8, 4420, 17640),
    "slimlite": (342_512, 79.4, 89.2, 4420, 17640),
    "rfb": (359_592, 106.5, 118.4, 4420, 17640),
    "mnet": (426_608, 184.7, 193.9, 3160, 12600),
}


def test_every_registered_model_has_expected_numbers():
    assert set(list_models()) == set(EXPECTED)


def test_the_torch_free_model_list_is_the_registry():
    from blazeface import defaults

    assert sorted(defaults.MODELS) == sorted(list_models())


def test_readme_table_states_the_expected_numbers():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, (params, macs, mflops, priors, priors_640) in EXPECTED.items():
        assert f"| `{name}` |" in readme
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"| {params:,} | {macs} | {mflops} | {priors} / {priors_640} |" in row, row


@pytest.mark.parametrize("name", list_models())
def test_profile_matches_expected(name):
    params, macs, mflops, priors, priors_640 = EXPECTED[name]
    prof = profile(name, 320, 240)
    assert prof.params == params
    assert prof.macs == pytest.approx(macs, rel=0.01)
    assert prof.mflops == pytest.approx(mflops, rel=0.01)
    assert prof.priors == priors
    assert (prof.width, prof.height) == (320, 240) and not prof.padded
    assert prof.mac_count == pytest.approx(prof.macs * 1e6)
    assert prof.flop_count >= prof.mac_count
    assert profile(name, 640, 480).priors == priors_640


@pytest.mark.parametrize("name", list_models())
def test_profile_restores_training_mode(name):
    model = create_model(name, weights=None).train()
    profile_model(model, 64, 64)
    assert model.training


def test_hand_counted_sequential():
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=True),  # 10x12 -> 5x6
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False),  # depthwise, dilated, 5x6
        nn.MaxPool2d(1),
        nn.Flatten(),
        nn.Linear(8 * 5 * 6, 10),
    )
    prof = profile_model(model, width=12, height=10, channels=4)
    out = 8 * 5 * 6
    conv1 = out * (4 // 2) * 3 * 3  # 4320
    conv2 = out * 1 * 3 * 3  # 2160
    linear = 10 * 240  # 2400
    assert prof.mac_count == conv1 + conv2 + linear == 8880
    # + one per bias output (conv1: 240, linear: 10) + four per BatchNorm output (4 * 240).
    assert prof.flop_count == 8880 + 240 + 10 + 4 * 240 == 10090
    assert prof.macs == pytest.approx(0.00888)
    assert prof.params == (8 * 2 * 9 + 8) + 16 + 8 * 9 + (240 * 10 + 10) == 2650
    assert prof.priors is None
    assert [layer.kind for layer in prof.layers] == ["Conv2d", "BatchNorm2d", "Conv2d", "Linear"]
    assert [layer.macs for layer in prof.layers] == [4320, 0, 2160, 2400]


def test_layer_called_twice_counts_twice_params_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1, bias=False)

        def forward(self, x):
            return self.conv(self.conv(x))

    prof = profile_model(Twice(), 4, 2)
    assert prof.mac_count == 2 * (3 * 2 * 4) * 3
    assert prof.params == 9 == sum(layer.params for layer in prof.layers)


def test_size_padded_to_multiple():
    prof = profile("blaze", 330, 250)
    assert (prof.width, prof.height) == (336, 256)
    assert prof.requested_size == (330, 250) and prof.padded
    assert prof.priors == 42 * 32 * 2 + 21 * 16 * 6
    with pytest.raises(BlazefaceError, match="multiples of 16"):
        profile("blaze", 330, 250, pad=False)


def test_cli_json(capsys):
    assert main(["profile", "--model", "slim", "--size", "320x240", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"params", "macs", "mflops", "priors"}
    assert out["params"] == 343_488 and out["priors"] == 4420
    assert out["macs"] == pytest.approx(87.5, rel=0.01)
    assert out["mflops"] == pytest.approx(98.8, rel=0.01)


def test_cli_all_table_and_json(capsys):
    assert main(["profile", "--model", "all"]) == 0
    table = capsys.readouterr().out
    for name in list_models():
        assert name in table
    assert main(["profile", "--model", "all", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == set(list_models())
    assert out["blaze"]["params"] == 175_280


def test_cli_padding_note_and_unknown_model(capsys):
    assert main(["profile", "--model", "blaze", "--size", "330x250", "--json"]) == 0
    captured = capsys.readouterr()
    assert "padded to 336x256" in captured.err
    assert json.loads(captured.out)["priors"] == 42 * 32 * 2 + 21 * 16 * 6
    assert main(["profile", "--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
