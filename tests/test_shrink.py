"""Kernel shrink (blazeface.training.shrink): the least-squares refit of a smaller-kernel student to a teacher."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from blazeface import create_model
from blazeface.models import get_config
from blazeface.models.blaze import Blaze
from blazeface.models.slim import Slim
from blazeface.training.shrink import copy_matching, shrink_kernels


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
    # slimlite: conv2 at stride 2 (slim's at 1), conv3 at 1 (slim's at 2), no conv4. conv2's depthwise layer
    # sees the teacher's input, so its fit is exact at the positions it keeps; from conv2's 1x1 on the
    # student's grid is every other position of the teacher's until conv3's output, where the two meet.
    teacher = create_model("slim", weights=None).eval()
    randomize_norms(teacher)
    student = Slim(get_config("slim"), lite=True)
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
