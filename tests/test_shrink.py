"""Kernel shrink (blazeface.training.shrink): the least-squares refit of a smaller-kernel student to a teacher."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from blazeface import create_model
from blazeface.models import get_config
from blazeface.models.blaze import Blaze
from blazeface.models.slim import Slim
from blazeface.training.shrink import copy_matching, find_narrowings, select_channels, shrink_kernels


def blaze3x3() -> nn.Module:
    """blaze with every BlazeBlock 3x3: the hardest shrink (blazelite keeps the stride-16 stage 5x5)."""
    return Blaze(get_config("blaze"), kernel=3)


def images(count: int, size: int = 160, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, size, size, generator=g) * 50 for _ in range(count)]


def zero_borders(model: nn.Module) -> None:
    """Make every 5x5 kernel a 3x3 one in disguise, so a 3x3 student can match the model exactly."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (5, 5):
                inner = m.weight[:, :, 1:4, 1:4].clone()
                m.weight.zero_()
                m.weight[:, :, 1:4, 1:4] = inner


def randomize_norms(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        loc, conf, landm = model.head_outputs(x)
    return torch.cat([t.flatten() for t in loc + conf + landm])


def test_a_student_that_can_match_the_teacher_does_from_any_start():
    torch.manual_seed(0)
    teacher = create_model("blaze", weights=None).eval()
    randomize_norms(teacher)
    zero_borders(teacher)
    student = blaze3x3().eval()
    # The student keeps its own random convolutions (weights and biases); only the norms are the teacher's.
    convs = {n for n, m in student.named_modules() if isinstance(m, nn.Conv2d)}
    norms = {k: v for k, v in teacher.state_dict().items() if k.rsplit(".", 1)[0] not in convs}
    student.load_state_dict(norms, strict=False)
    calibration = images(4)
    fits = shrink_kernels(teacher, student, calibration, copy_teacher=False)
    assert len(fits) == sum(isinstance(m, nn.Conv2d) for m in student.modules())
    assert all(f.error_after < 1e-7 for f in fits), [(f.name, f.error_after) for f in fits if f.error_after >= 1e-7]
    assert max(f.error_before for f in fits) > 0.1  # it did start elsewhere
    # Exact on the images it saw (a new one can reach channels they leave dead, which the fit cannot know).
    for x in calibration:
        expected = outputs(teacher, x)
        assert torch.allclose(outputs(student, x), expected, atol=1e-4 * float(expected.abs().max()))


def test_the_fitted_bias_folds_into_the_following_norm():
    """A teacher convolution with a bias, a student one without: the fit's bias lands in the BN's mean."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2, bias=True), nn.BatchNorm2d(4)).eval()
    student = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)).eval()
    randomize_norms(teacher)
    zero_borders(teacher)
    with torch.no_grad():
        teacher[0].bias.copy_(torch.tensor([3.0, -2.0, 0.5, 7.0]))
    shrink_kernels(teacher, student, images(2, 32))
    x = images(1, 40, seed=9)[0]
    with torch.no_grad():
        assert torch.allclose(student(x), teacher(x), atol=1e-3)
    assert torch.allclose(student[1].running_mean, teacher[1].running_mean - teacher[0].bias, atol=1e-4)


def test_no_layer_ends_worse_than_the_centre_crop_it_starts_from():
    torch.manual_seed(0)
    teacher = create_model("blaze", weights=None).eval()
    randomize_norms(teacher)
    student = blaze3x3()
    centre = blaze3x3().eval()
    copy_matching(teacher, centre)
    calibration = images(3)
    fits = shrink_kernels(teacher, student, calibration)
    assert fits[0].name == "conv2.conv.0.0"  # the stem is the teacher's own: copied, not refitted
    assert all(f.error_after <= f.error_before + 1e-6 for f in fits)
    assert student.training  # the mode it came in with
    student.eval()
    expected = torch.cat([outputs(teacher, x) for x in calibration])
    shrunk = ((torch.cat([outputs(student, x) for x in calibration]) - expected) ** 2).sum()
    cropped = ((torch.cat([outputs(centre, x) for x in calibration]) - expected) ** 2).sum()
    assert shrunk < 0.5 * cropped


def test_mismatched_networks_are_refused():
    with pytest.raises(ValueError, match="the teacher's under the same names"):
        shrink_kernels(create_model("blaze", weights=None), create_model("slim", weights=None), images(1, 64))
    with pytest.raises(ValueError, match="at least one"):
        shrink_kernels(create_model("blaze", weights=None), blaze3x3(), [])


def test_blazelite_refits_its_5x5_stride16_stage_too():
    teacher = create_model("blaze", weights=None).eval()
    randomize_norms(teacher)
    student = create_model("blazelite", weights=None)
    fits = shrink_kernels(teacher, student, images(2, 96))
    names = [f.name for f in fits]
    assert names[0] == "conv2.conv.0.0" and "conv10.conv.2.0" in names and names[-1] == "landm.1.2"
    assert student.conv10.conv[2][0].weight.shape[-2:] == (5, 5) and student.conv9.conv[2][0].weight.shape[-2:] == (3, 3)


def test_a_student_without_a_teacher_block_refits_from_the_block_after_it():
    # Same kernels, conv3 missing: conv1-conv2 are the teacher's as they are; conv4 on sees conv2's output
    # where the teacher's saw conv3's, so everything from its first convolution on is refitted.
    teacher = create_model("blaze", weights=None).eval()
    randomize_norms(teacher)
    student = Blaze(get_config("blaze"), stride2_blocks=1)
    assert not any(k.startswith("conv3.") for k in student.state_dict())
    fits = shrink_kernels(teacher, student, images(2, 96))
    assert fits[0].name == "conv4.conv.0.0" and fits[-1].name == "landm.1.2"
    assert torch.equal(student.conv2.conv[0][0].weight, teacher.conv2.conv[0][0].weight)
    assert all(f.error_after <= f.error_before + 1e-6 for f in fits)
    assert fits[0].error_after < fits[0].error_before


def test_a_student_with_a_layer_the_teacher_lacks_is_refused():
    with pytest.raises(ValueError, match="the teacher's under the same names"):
        shrink_kernels(Blaze(get_config("blaze"), stride2_blocks=1), create_model("blaze", weights=None), images(1, 64))


def test_a_student_that_strides_earlier_is_fitted_on_its_coarser_grid():
    # slim with an early stride: conv2 at stride 2 (slim's at 1), conv3 at 1 (slim's at 2), no conv4. conv2's depthwise layer
    # sees the teacher's input, so its fit is exact at the positions it keeps; from conv2's 1x1 on the
    # student's grid is every other position of the teacher's until conv3's output, where the two meet.
    teacher = create_model("slim", weights=None).eval()
    randomize_norms(teacher)
    student = Slim(get_config("slim"), early_stride=True)
    assert student.conv2[0].stride == (2, 2) and student.conv3[0].stride == (1, 1)
    fits = shrink_kernels(teacher, student, images(2, 96))
    assert [f.name for f in fits[:3]] == ["conv2.0", "conv2.3", "conv3.0"] and fits[-1].name == "landm.3"
    assert fits[0].error_after < 1e-8 and fits[1].error_after < 1e-8  # the teacher's values, subsampled
    torch.testing.assert_close(student.conv2[0].weight, teacher.conv2[0].weight, rtol=1e-4, atol=1e-4)
    assert all(f.error_after <= f.error_before + 1e-6 for f in fits)
    x = images(1, 96, seed=5)[0]
    student.eval()
    with torch.no_grad():
        t2, s2 = teacher.conv2(teacher.conv1(x)), student.conv2(student.conv1(x))
    torch.testing.assert_close(s2, t2[..., ::2, ::2], rtol=1e-3, atol=1e-3)


def test_a_student_grid_that_is_not_a_subsample_of_the_teachers_is_refused():
    # Without padding a stride-2 layer's outputs sit between the teacher's positions, not on them.
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.BatchNorm2d(4))
    student = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 0), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="not on the teacher's grid"):
        shrink_kernels(teacher, student, images(1, 32))


def test_a_narrowed_layer_keeps_the_channels_its_consumer_needs():
    # slim -> conv2 with 16 of its 32 output channels. The teacher's conv3 1x1 reads only channels 1, 3, 5, ...
    # (the others' columns are zero), so those 16 rebuild its output exactly: the selection must find them,
    # the kept channels' weights are the teacher's, and the student then computes the teacher's outputs.
    torch.manual_seed(0)
    teacher = create_model("slim", weights=None).eval()
    randomize_norms(teacher)
    needed = list(range(1, 32, 2))
    with torch.no_grad():
        unused = [c for c in range(32) if c not in needed]
        teacher.conv3[3].weight[:, unused] = 0
        teacher.conv3[1].bias.fill_(5.0)  # no channel the ReLU leaves dead: else dropping it costs nothing too
    student = Slim(get_config("slim"), conv2_channels=16)
    calibration = images(2, 96)
    fits = shrink_kernels(teacher, student, calibration)
    assert fits[0].name == "conv3.3" and fits[0].error_after < 1e-8  # conv2.3 and conv3.0 are copies, not fits
    torch.testing.assert_close(student.conv2[3].weight, teacher.conv2[3].weight[needed])
    torch.testing.assert_close(student.conv3[0].weight, teacher.conv3[0].weight[needed])
    torch.testing.assert_close(student.conv3[1].running_var, teacher.conv3[1].running_var[needed])
    student.eval()
    x = images(1, 96, seed=7)[0]
    torch.testing.assert_close(outputs(student, x), outputs(teacher, x), rtol=1e-3, atol=1e-3)


def test_a_narrowed_residual_stream_keeps_the_channels_its_blocks_need():
    # blaze -> its stride-2 stream (stem, conv2's residual branch, conv4's two branches) at 16 of 24 channels.
    # conv2's pointwise (the stream's mixer) and conv4's pointwise and shortcut (its consumers) read only
    # channels 0, 3, 6, 9, ... and 1, 4, ... (the others' columns are zero), so those 16 carry everything: the
    # selection must find them, and the narrowed network, fitted, computes the teacher's outputs.
    torch.manual_seed(0)
    teacher = Blaze(get_config("blaze"), kernel=3, stride2_blocks=1).eval()
    randomize_norms(teacher)
    needed = [c for c in range(24) if c % 3 != 2]
    unused = [c for c in range(24) if c % 3 == 2]
    with torch.no_grad():
        teacher.conv2.conv[0][3].weight[:, unused] = 0
        teacher.conv2.conv[0][3].weight[unused] = 0
        teacher.conv4.conv[0][3].weight[:, unused] = 0
        teacher.conv4.shortcut[1].weight[:, unused] = 0
    student = Blaze(get_config("blaze"), kernel=3, stride2_blocks=1, stride2_width=16)
    narrowing, = find_narrowings(teacher, student)
    assert narrowing.conv == "conv1.0" and narrowing.mixers == ("conv2.conv.0.3",)
    assert narrowing.consumers == ("conv4.conv.0.3", "conv4.shortcut.1")
    fits = shrink_kernels(teacher, student, images(3, 256))
    assert fits[0].name == "conv2.conv.0.3"  # the stem and conv2's depthwise are the kept channels' copies
    torch.testing.assert_close(student.conv1[0].weight, teacher.conv1[0].weight[needed])
    student.eval()
    assert max(f.error_after for f in fits) < 1e-8
    # On a new image too, within the conditioning of the deepest fits (stride 16: few positions a photo).
    x = images(1, 128, seed=7)[0]
    torch.testing.assert_close(outputs(student, x), outputs(teacher, x), rtol=1e-2, atol=1e-2)


def test_select_channels_drops_the_channel_another_one_duplicates():
    # Channel 2 of the consumer's input is channel 0 again (a duplicated filter): with one channel to spare
    # it is the one whose loss the 1x1 can make up for in full, so one of the two copies goes.
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1)).eval()
    with torch.no_grad():
        teacher[0].weight[2] = teacher[0].weight[0]
        teacher[0].bias[2] = teacher[0].bias[0]
    kept = select_channels(teacher, teacher[2], images(2, 24), keep=3)
    assert kept in ([0, 1, 3], [1, 2, 3])


def test_a_narrowing_that_meets_anything_but_channelwise_layers_is_refused():
    teacher = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1))
    student = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 8, 3, padding=1))
    with pytest.raises(ValueError, match="0: its 4 channels reach 2 .Conv2d. before a full 1x1 convolution"):
        shrink_kernels(teacher, student, images(1, 16))
    with pytest.raises(ValueError, match="0: no 1x1 convolution after it mixes its 4 channels"):
        shrink_kernels(teacher[:2], student[:2], images(1, 16))


def test_a_refit_that_does_worse_on_held_out_images_is_undone():
    # Calibrated on one 96x96 image, slim's stride-64 heads (3x3 convolutions over 256 channels: 2,305
    # unknowns per output) see 4 positions: the fit matches them exactly and new images badly. With held-out
    # images those refits are undone and the layers keep the teacher's weights.
    torch.manual_seed(0)
    teacher = create_model("slim", weights=None).eval()
    randomize_norms(teacher)
    student = Slim(get_config("slim"), conv2_channels=16)
    fits = {f.name: f for f in shrink_kernels(teacher, student, images(1, 96), held_out=images(2, 96, seed=3))}
    head = fits["loc.3"]
    assert head.error_after < 1e-6 and not head.kept and head.held_after > head.held_before
    torch.testing.assert_close(student.loc[3].weight, teacher.loc[3].weight)
    assert fits["conv3.3"].kept and fits["conv3.3"].held_after < fits["conv3.3"].held_before
    assert all(f.kept == (f.held_after < f.held_before) for f in fits.values())
