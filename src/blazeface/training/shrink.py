"""Kernel shrink: start a network with smaller spatial kernels (blazelite: 3x3 up to stride 8), fewer layers
(blazelite) or fewer channels (slimlite) from a trained larger one (blaze, slim), layer by layer, by least squares.

Cutting each 5x5 kernel to its centre 3x3 loses most of what blaze learned. Instead every convolution of the student, in the order the network runs it, is refitted as the linear map
(kernel and a bias) that takes the *student's* input at that layer closest, in squared error over
calibration images, to the *teacher's* output of the same layer. Because the inputs come from the student as
refitted so far, each fit also absorbs the error the earlier layers left. Every output channel (of a
depthwise layer: every channel) is an independent linear least-squares problem with ``in_channels * k * k +
1`` unknowns, solved from its accumulated normal equations; the centre crop is one candidate, so no fit is
worse than it on the calibration images. With 48 WIDER training photos, before any training, blaze ->
blazelite scores dev AP 0.757 / 0.679 / 0.417 at long side 640 (blaze with 3x3 kernels everywhere: 0.680 /
0.618 / 0.393; the centre crops alone: 0.001 / 0.015 / 0.008; docs/MODELS.md).

The two networks must name their modules alike (blazelite has blaze's names) and register them in the order
they run; the student may lack whole layers of the teacher (blazelite has no conv3), whose work the layers
after them are fitted to take over, and may take a stride earlier (``Slim(early_stride=True)``: conv2 at stride 2, conv3 at 1),
where its layers are fitted to the teacher's outputs at the positions of the student's coarser grid; a
convolution without a bias must be followed by a BatchNorm2d, into whose running mean the fitted bias folds.

A student layer may also be *narrower* than the teacher's (slimlite: conv2 with 16 output channels where slim's
has 32). Its channels pass through BatchNorms, ReLUs and depthwise layers unchanged up to the first full 1x1
convolution that mixes them (the "consumer"); :func:`select_channels` keeps the subset of them from which that
consumer's output is best rebuilt by least squares (greedy backward elimination on the teacher's statistics),
the layers in between take the teacher's weights of those channels, and the consumer is refitted. A residual
stream narrows the same way (blazelite: the stem and conv2 with 16 of blaze's 24 channels): the block's
convolution that maps the stream onto itself (a "mixer") keeps the same channels, and the 1x1 convolutions of
the next block that widen it (a BlazeBlock's branch and its shortcut) are its consumers; where a kernel
differs too, the kept channels' layers are refitted to the teacher's outputs of those channels.

With ``held_out`` images, each refit is kept only if it lowers the layer's error on them too. A layer with
more unknowns than its calibration images give positions (the heads at stride 64 of slim: 2,305 unknowns per
output, a few dozen positions a photo) fits its calibration images exactly and new ones wildly: slim ->
slimlite's stride-64 box head went from 0.02 to 4.7 relative error on held-out photos.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LayerFit:
    """One refitted convolution: relative squared error of its output against the teacher's (error over
    the teacher output's energy) with the weights it started from and with the fitted ones."""

    name: str
    error_before: float
    error_after: float
    # On the held-out images, when given: the refit is kept only if held_after < held_before.
    held_before: float | None = None
    held_after: float | None = None

    @property
    def kept(self) -> bool:
        return self.held_before is None or self.held_after < self.held_before


def copy_matching(teacher: nn.Module, student: nn.Module) -> None:
    """Start the student from every teacher tensor of the same name and shape, and each smaller spatial
    kernel from the centre of the teacher's (the fit below replaces those, but not the layers before the
    first changed one)."""
    source = teacher.state_dict()
    target = student.state_dict()
    for name, value in target.items():
        src = source.get(name)
        if src is None:
            continue
        if src.shape == value.shape:
            value.copy_(src)
        elif src.dim() == 4 and src.shape[:2] == value.shape[:2]:
            value.copy_(_centre_crop(src, value.shape[2:]))


def _centre_crop(kernel: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """The centre ``size`` of a (out, in, kh, kw) kernel (itself when it is that size)."""
    (kh, kw), (sh, sw) = tuple(size), kernel.shape[2:]
    top, left = (sh - kh) // 2, (sw - kw) // 2
    return kernel[:, :, top:top + kh, left:left + kw]


def _convolutions(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _set_bias(model: nn.Module, name: str, conv: nn.Conv2d, bias: torch.Tensor) -> None:
    """Give ``conv`` the fitted ``bias``: as its own, else folded into the BatchNorm2d registered right after
    it (conv(x) + b then BN equals conv(x) then BN with running_mean - b)."""
    if conv.bias is not None:
        conv.bias.copy_(bias.to(conv.bias.dtype))
        return
    modules = list(model.named_modules())
    index = next(i for i, (n, _) in enumerate(modules) if n == name)
    following = modules[index + 1][1] if index + 1 < len(modules) else None
    if not isinstance(following, nn.BatchNorm2d):
        raise ValueError(f"{name}: a convolution without a bias must be followed by a BatchNorm2d")
    following.running_mean.sub_(bias.to(following.running_mean.dtype))


class _Captured(Exception):
    """Raised by a hook once it holds what the fit needs: the rest of the forward pass is not run."""


def _capture(model: nn.Module, hook_on: nn.Module, image: torch.Tensor, *, output: bool) -> torch.Tensor:
    """The output of (``output``) or the input to ``hook_on`` when ``model`` runs ``image``. The pass stops
    there, so the layers after it (half the network on average) cost nothing, and no in-place op after it
    can rewrite the captured tensor."""
    held = []

    def keep(tensor):
        held.append(tensor)
        raise _Captured

    handle = (hook_on.register_forward_hook(lambda m, i, o: keep(o)) if output
              else hook_on.register_forward_pre_hook(lambda m, i: keep(i[0])))
    try:
        model(image)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not held:
        raise ValueError("the layer being refitted did not run on the calibration image")
    return held[0]


def _same_padding(conv: nn.Conv2d) -> bool:
    """Whether output (i, j) is centred on input (stride * i, stride * j)."""
    return conv.padding == tuple(k // 2 for k in conv.kernel_size)


def _on_student_grid(name: str, target: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """The teacher's output of a layer at the positions of the student's output of it.

    A student that takes a stride earlier than the teacher (``Slim(early_stride=True)``: conv2 at stride 2 where slim's conv3
    was) has a coarser grid from there until the teacher's stride catches up. With "same" padding, output
    (i, j) of a stride-s layer is centred on input (s*i, s*j), so the student's grid is every f-th position
    of the teacher's: fitting to that subsample asks each student layer for exactly the teacher's value at
    the points it keeps."""
    (th, tw), (sh, sw) = target.shape[-2:], tuple(size)
    if (th, tw) == (sh, sw):
        return target
    factor = -(-th // sh)  # ceil: an odd teacher grid of 2n - 1 keeps n positions
    if factor < 2 or target[..., ::factor, ::factor].shape[-2:] != (sh, sw):
        raise ValueError(f"{name}: the student's output ({sw}x{sh}) is not on the teacher's grid ({tw}x{th}) "
                         "taken every n-th position")
    return target[..., ::factor, ::factor]


@torch.no_grad()
def _fit_layer(teacher: nn.Module, student: nn.Module, name: str, t_conv: nn.Conv2d, s_conv: nn.Conv2d,
               images: Sequence[torch.Tensor], ridge: float, rows: list[int] | None = None) -> LayerFit:
    """Refit ``s_conv`` to the teacher's outputs of ``t_conv`` (of the channels ``rows`` only, for a narrowed
    layer)."""
    if s_conv.out_channels != (t_conv.out_channels if rows is None else len(rows)):
        raise ValueError(f"{name}: teacher and student layers differ in more than the kernel and stride")
    if s_conv.stride != t_conv.stride and not (_same_padding(s_conv) and _same_padding(t_conv)):
        raise ValueError(f"{name}: a stride that differs from the teacher's needs 'same' padding in both, else the "
                         "student's outputs are not on the teacher's grid")
    kh, kw = s_conv.kernel_size
    taps = kh * kw
    c_in, c_out = s_conv.in_channels, s_conv.out_channels
    depthwise = s_conv.groups == c_in and c_in == c_out and c_in > 1
    if s_conv.groups != 1 and not depthwise:
        raise ValueError(f"{name}: only full and depthwise convolutions can be refitted")
    unknowns = taps + 1 if depthwise else c_in * taps + 1
    gram = torch.zeros((c_in, unknowns, unknowns) if depthwise else (unknowns, unknowns), dtype=torch.float64)
    rhs = torch.zeros((c_in, unknowns) if depthwise else (unknowns, c_out), dtype=torch.float64)
    energy = error_before = 0.0
    for image in images:
        if image.shape[0] != 1:
            raise ValueError("calibration images go one at a time (a 1xCxHxW tensor each)")
        target = _capture(teacher, t_conv, image, output=True)
        if rows is not None:
            target = target[:, rows]
        x = _capture(student, s_conv, image, output=False)
        out = s_conv(x)
        target = _on_student_grid(name, target, out.shape[-2:])
        patches = F.unfold(x, (kh, kw), dilation=s_conv.dilation, padding=s_conv.padding, stride=s_conv.stride)[0]
        n = patches.shape[1]
        y = target[0].reshape(c_out, n).double()
        ones = torch.ones(1, n, dtype=patches.dtype)
        if depthwise:
            p = torch.cat([patches.reshape(c_in, taps, n), ones.expand(c_in, 1, n)], 1).double()
            gram += torch.einsum("cin,cjn->cij", p, p)
            rhs += torch.einsum("cin,cn->ci", p, y)
        else:
            p = torch.cat([patches, ones], 0).double()
            gram += p @ p.T
            rhs += p @ y.T
        energy += float((y ** 2).sum())
        error_before += float(((out[0].reshape(c_out, n).double() - y) ** 2).sum())
    # A ridge relative to each unknown's own scale (the bias's is the pixel count) keeps dead or constant
    # inputs solvable without pulling the others towards zero.
    if depthwise:
        diagonal = torch.diagonal(gram, dim1=1, dim2=2)
        solution = torch.linalg.solve(gram + torch.diag_embed(ridge * diagonal + 1e-12), rhs)
        weight, bias = solution[:, :taps].reshape(c_in, 1, kh, kw), solution[:, taps]
        # ||y||^2 - 2 w.r + w.G.w, summed over channels: the fitted error without another pass.
        fitted = torch.einsum("ci,ci->", solution, rhs) * -2 + torch.einsum("ci,cij,cj->", solution, gram, solution)
    else:
        solution = torch.linalg.solve(gram + torch.diag(ridge * torch.diagonal(gram) + 1e-12), rhs)
        weight, bias = solution[:-1].T.reshape(c_out, c_in, kh, kw), solution[-1]
        fitted = -2 * (solution * rhs).sum() + torch.einsum("io,ij,jo->", solution, gram, solution)
    s_conv.weight.copy_(weight.to(s_conv.weight.dtype))
    _set_bias(student, name, s_conv, bias)
    energy = max(energy, 1e-30)
    return LayerFit(name, error_before / energy, max(0.0, (energy + float(fitted)) / energy))


def _in_order(names: list[str], t_names: list[str]) -> bool:
    """Whether ``names`` is ``t_names`` with some entries left out (a subsequence)."""
    remaining = iter(t_names)
    return all(any(n == t for t in remaining) for n in names)


@torch.no_grad()
def _held_out_error(student: nn.Module, name: str, s_conv: nn.Conv2d, images: Sequence[torch.Tensor],
                    targets: Sequence[torch.Tensor]) -> float:
    """Relative squared error of the student's output of a layer against the teacher's (``targets``, one per
    image: the teacher does not change during a fit, so they are captured once for before and after)."""
    error = energy = 0.0
    for image, target in zip(images, targets):
        out = _capture(student, s_conv, image, output=True)
        target = _on_student_grid(name, target, out.shape[-2:]).double()
        error += float(((out.double() - target) ** 2).sum())
        energy += float((target ** 2).sum())
    return error / max(energy, 1e-30)


# --- narrowed layers (fewer output channels than the teacher's) -----------------------------------------

@dataclass(frozen=True)
class Narrowing:
    """A student convolution with fewer output channels than the teacher's, and where its channels go: the
    channelwise layers they pass through (BatchNorms, depthwise convolutions), the ``mixers`` that map them
    onto themselves (a residual stream's 1x1 or full convolutions, narrowed alike) and the ``consumers``:
    the 1x1 convolutions of one block that mix them into the teacher's full width (several when the block
    has branches, as a BlazeBlock's convolution and shortcut)."""

    conv: str
    channelwise: tuple[str, ...]
    consumers: tuple[str, ...]
    mixers: tuple[str, ...] = ()

    @property
    def narrowed(self) -> tuple[str, ...]:
        """Every layer whose output channels are the kept ones (the teacher's rows of those channels)."""
        return (self.conv,) + self.channelwise + self.mixers


def find_narrowings(teacher: nn.Module, student: nn.Module) -> list[Narrowing]:
    """Every narrowed student convolution, in order; raises ``ValueError`` where the narrowed channels meet
    anything but BatchNorms, activations, depthwise layers and mixers before the full 1x1 convolutions of
    one block that mix them."""
    t_modules = dict(teacher.named_modules())
    s_modules = list(student.named_modules())
    found, covered = [], set()
    for i, (name, conv) in enumerate(s_modules):
        t_conv = t_modules.get(name)
        if (name in covered or not (isinstance(conv, nn.Conv2d) and isinstance(t_conv, nn.Conv2d))
                or conv.out_channels >= t_conv.out_channels):
            continue
        if conv.groups != 1:
            raise ValueError(f"{name}: only a full convolution can be narrowed")
        width, channelwise, mixers, consumers, block = conv.out_channels, [], [], [], None
        for later, module in s_modules[i + 1:]:
            if block is not None and not later.startswith(block):
                break
            t_module = t_modules.get(later)
            if isinstance(module, nn.BatchNorm2d) and module.num_features == width:
                channelwise.append(later)
            elif (isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels == width
                  and isinstance(t_module, nn.Conv2d) and t_module.groups == t_module.in_channels > width):
                channelwise.append(later)
            elif (isinstance(module, nn.Conv2d) and module.groups == 1 and module.in_channels == width
                  and isinstance(t_module, nn.Conv2d) and t_module.groups == 1):
                if module.kernel_size == (1, 1) and module.out_channels == t_module.out_channels:
                    consumers.append(later)
                    block = later.split(".")[0] + "."  # the block's other branches read the same channels
                elif module.out_channels == width and t_module.in_channels == t_module.out_channels > width:
                    mixers.append(later)
                else:
                    raise ValueError(f"{name}: its {width} channels reach {later} (Conv2d) before a full 1x1 "
                                     "convolution that mixes them")
            elif block is None and (list(module.parameters(recurse=False)) or list(module.buffers(recurse=False))):
                raise ValueError(f"{name}: its {width} channels reach {later} ({type(module).__name__}) before a "
                                 "full 1x1 convolution that mixes them")
        if not consumers:
            raise ValueError(f"{name}: no 1x1 convolution after it mixes its {width} channels")
        found.append(Narrowing(name, tuple(channelwise), tuple(consumers), tuple(mixers)))
        covered.update(channelwise + mixers)
    return found


@torch.no_grad()
def select_channels(teacher: nn.Module, consumers: nn.Conv2d | Sequence[nn.Conv2d], images: Sequence[torch.Tensor],
                    keep: int, ridge: float = 1e-6) -> list[int]:
    """The ``keep`` input channels of the teacher's 1x1 ``consumers`` from which their outputs are best rebuilt.

    Over ``images``, the output y = W x of each consumer (without its bias) is regressed on a subset of x's
    channels plus a constant (the dropped channels' means fold into the bias); channels are removed one at
    a time, each time the one whose loss raises the least-squares residual, summed over the consumers,
    least (greedy backward elimination: C - keep rounds of at most C solves of size keep + 1 per consumer,
    from the (C+1)^2 Gram matrices)."""
    consumers = [consumers] if isinstance(consumers, nn.Conv2d) else list(consumers)
    c = consumers[0].in_channels
    if not 0 < keep <= c:
        raise ValueError(f"cannot keep {keep} of {c} channels")
    grams, weights = [], []
    for consumer in consumers:
        gram = torch.zeros(c + 1, c + 1, dtype=torch.float64)
        for image in images:
            x = _capture(teacher, consumer, image, output=False)[0].reshape(c, -1).double()
            p = torch.cat([x, torch.ones(1, x.shape[1], dtype=torch.float64)])
            gram += p @ p.T
        grams.append(gram)
        weights.append(torch.cat([consumer.weight.reshape(consumer.out_channels, c).double(),
                                  torch.zeros(consumer.out_channels, 1, dtype=torch.float64)], 1))

    def explained(subset: list[int]) -> float:
        k = subset + [c]
        total = 0.0
        for gram, weight in zip(grams, weights):
            g = gram[k][:, k]
            cross = weight @ gram[:, k]
            solution = torch.linalg.solve(g + torch.diag(ridge * torch.diagonal(g) + 1e-12), cross.T)
            total += float((cross * solution.T).sum())
        return total

    chosen = list(range(c))
    while len(chosen) > keep:
        chosen.remove(max(chosen, key=lambda drop: explained([j for j in chosen if j != drop])))
    return chosen


@torch.no_grad()
def _copy_channels(teacher: nn.Module, student: nn.Module, narrowing: Narrowing, channels: list[int]) -> None:
    """The teacher's tensors of the kept channels: output rows of the narrowed layers (a mixer's input
    columns too), each kernel cut to its centre where the student's is smaller."""
    t_modules, s_modules = dict(teacher.named_modules()), dict(student.named_modules())
    index = torch.tensor(channels)
    for name in narrowing.narrowed:
        teacher_state = t_modules[name].state_dict()
        for key, value in s_modules[name].state_dict().items():
            source = teacher_state[key]
            if source.dim() == 0:  # a BatchNorm's update counter
                value.copy_(source)
                continue
            source = source[index]
            if name in narrowing.mixers and key == "weight":
                source = source[:, index]
            value.copy_(_centre_crop(source, value.shape[2:]) if source.dim() == 4 else source)


def shrink_kernels(teacher: nn.Module, student: nn.Module, images: Iterable[torch.Tensor], *,
                   copy_teacher: bool = True, ridge: float = 1e-6, held_out: Iterable[torch.Tensor] = (),
                   progress=None) -> list[LayerFit]:
    """Refit ``student`` (in place, eval mode) to ``teacher`` over ``images`` (1x3xHxW network inputs, kept
    in memory: every layer needs another pass over them).

    ``copy_teacher``: first give the student every teacher tensor that fits (:func:`copy_matching`); the
    layers before the first whose kernel differs are then the teacher's and are not refitted. Without it
    the student keeps its own non-convolution tensors and every convolution is refitted. A narrowed layer
    (:func:`find_narrowings`) needs it: its kept channels are the teacher's.
    ``held_out``: images the fits do not see; a refit that does not lower a layer's error on them is undone
    (the layer keeps the weights it had, and ``LayerFit.kept`` is False).
    Returns one :class:`LayerFit` per refitted convolution, in order; ``progress(fit)`` is called after each."""
    images, held_out = list(images), list(held_out)
    if not images:
        raise ValueError("shrink_kernels needs at least one calibration image")
    teacher_was, student_was = teacher.training, student.training
    teacher.eval()
    student.eval()
    t_convs, s_convs = _convolutions(teacher), _convolutions(student)
    names, t_names = list(s_convs), list(t_convs)
    if not _in_order(names, t_names):
        raise ValueError("the student's convolutions must be the teacher's under the same names, in the same "
                         "order, less any the student lacks")
    narrowings = find_narrowings(teacher, student)
    if narrowings and not copy_teacher:
        raise ValueError(f"{narrowings[0].conv} is narrower than the teacher's: its kept channels are copied, "
                         "which needs copy_teacher")
    first, rows = 0, {}
    fits = []
    try:
        if copy_teacher:
            copy_matching(teacher, student)
            for narrowing in narrowings:
                keep = select_channels(teacher, [t_convs[c] for c in narrowing.consumers], images,
                                       s_convs[narrowing.conv].out_channels, ridge)
                _copy_channels(teacher, student, narrowing, keep)
                rows.update({n: keep for n in narrowing.narrowed if n in s_convs})
            # The first layer that is not the teacher's (or its kept channels of the teacher's) exactly: its
            # kernel or stride differs, a teacher layer before it is missing from the student, or its input
            # lost channels (a consumer or mixer of a narrowing). From there on every layer is refitted, a
            # narrowed one to the teacher's outputs of its kept channels.
            fed = {n for narrowing in narrowings for n in narrowing.consumers + narrowing.mixers}
            first = next((i for i, n in enumerate(names)
                          if s_convs[n].kernel_size != t_convs[n].kernel_size or s_convs[n].stride != t_convs[n].stride
                          or t_names[i] != n or n in fed
                          or (n not in rows and s_convs[n].weight.shape != t_convs[n].weight.shape)), len(names))
        for name in names[first:]:
            t_conv, s_conv = t_convs[name], s_convs[name]
            if held_out:
                targets = [_capture(teacher, t_conv, image, output=True) for image in held_out]
                if name in rows:
                    targets = [target[:, rows[name]] for target in targets]
                before = _held_out_error(student, name, s_conv, held_out, targets)
                saved = {k: v.clone() for k, v in student.state_dict().items()}
            fit = _fit_layer(teacher, student, name, t_conv, s_conv, images, ridge, rows.get(name))
            if held_out:
                fit = replace(fit, held_before=before,
                              held_after=_held_out_error(student, name, s_conv, held_out, targets))
                if not fit.kept:
                    student.load_state_dict(saved)
            fits.append(fit)
            if progress is not None:
                progress(fit)
    finally:
        teacher.train(teacher_was)
        student.train(student_was)
    return fits
