"""Feature imitation: the maps a student's heads read, each through a learnt 1x1 adapter, regress the maps a
teacher's heads read at the same stride (FitNets, Romero et al. 2015; for detectors, Wang et al., CVPR 2019).

Per-prior distillation hands the student two logits, four box and ten landmark numbers per prior; the maps
behind them hold 64-256 channels per cell, which is where a teacher that saw five times more photos keeps
what it knows about faces too small or too blurred to score well. Levels pair by stride, so a student of
another architecture (blaze from slim's original: strides 8 and 16) learns from the levels both have; the
adapters absorb the difference in width, and that two separately trained networks' channels come in no
common order (the student never starts from the teacher's weights, so even a same-architecture pair needs
them). The adapters start as the least-squares fit of the first batch, so the term starts at what a linear
map cannot explain instead of at a random projection's error, and the student is not shaken at the start.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BlazefaceError
from ..metadata import INPUT_NAME


class HeadInputTap:
    """The outputs of a detector's ``head_inputs`` submodules (``FaceDetectorNet.head_inputs``), level by level,
    caught by forward hooks during each forward pass: through a DistributedDataParallel wrapper too, which
    calls the same submodules."""

    def __init__(self, model: nn.Module):
        self.names = tuple(getattr(model, "head_inputs", ()))
        if not self.names:
            raise BlazefaceError(f"{type(model).__name__} names no head inputs: it cannot take part in feature "
                                 "distillation")
        self._maps: dict[str, torch.Tensor] = {}
        self._handles = [model.get_submodule(name).register_forward_hook(self._keeper(name)) for name in self.names]

    def _keeper(self, name: str):
        def keep(module, inputs, output):
            self._maps[name] = output
        return keep

    def take(self) -> list[torch.Tensor]:
        """The maps of the last forward pass (then forgotten, so no step's graph outlives it)."""
        missing = [name for name in self.names if name not in self._maps]
        if missing:
            raise RuntimeError(f"no forward pass reached {', '.join(missing)} since the last take()")
        maps = [self._maps[name] for name in self.names]
        self._maps.clear()
        return maps

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def pair_levels(student_strides: Sequence[int], teacher_strides: Sequence[int]) -> list[tuple[int, int]]:
    """``(student level, teacher level)`` for each stride both have, finest first."""
    pairs = [(i, teacher_strides.index(s)) for i, s in enumerate(student_strides) if s in teacher_strides]
    if not pairs:
        raise BlazefaceError(f"the student's levels (strides {list(student_strides)}) and the feature teacher's "
                             f"({list(teacher_strides)}) share no stride")
    return pairs


class FeatureImitationLoss(nn.Module):
    """``weight`` times the mean over paired levels of the squared error between the adapted student map and the
    teacher's map, divided by the teacher map's mean per-channel variance over the batch: about the share of
    the teacher's features the student does not reproduce (0 when it reproduces them up to the adapter's
    linear map), the same size at every level and for any teacher.

    ``student_channels`` / ``teacher_channels``: the widths of each model's head inputs, level by level.
    ``reduce`` sums a tensor over the processes of a run (all-reduce; default: one process): the adapters' fit
    and the teacher's spread are then the global batch's, so N processes train as one."""

    def __init__(self, pairs: Sequence[tuple[int, int]], student_channels: Sequence[int],
                 teacher_channels: Sequence[int], weight: float = 1.0, ridge: float = 1e-3,
                 reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t):
        super().__init__()
        self.pairs = list(pairs)
        self.weight, self.ridge, self.reduce = weight, ridge, reduce
        self.adapters = nn.ModuleList(nn.Conv2d(student_channels[s], teacher_channels[t], 1) for s, t in self.pairs)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> None:
        """Each adapter := the ridge least-squares map from the student's channels (and a bias) to the teacher's
        over every cell of these maps (the normal equations summed over processes: every process fits the same
        adapters)."""
        for adapter, (s, t) in zip(self.adapters, self.pairs):
            x = student_maps[s].detach().float().permute(0, 2, 3, 1).reshape(-1, adapter.in_channels)
            y = teacher_maps[t].detach().float().permute(0, 2, 3, 1).reshape(-1, adapter.out_channels)
            x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
            gram, cross = self.reduce(x.T @ x), self.reduce(x.T @ y)
            cells = gram[-1, -1]  # the bias column's sum of ones
            # Ridge relative to the maps' mean second moment, floored at 1 (absolute units): a student that has
            # not learnt yet can have maps of 1e-10 (a fresh network under frozen BatchNorm), and a scale-free
            # fit would then give weights of 1e7 whose gradients blow the student up in one step.
            penalty = self.ridge * cells * (gram.diagonal()[:-1].mean() / cells).clamp_min(1.0)
            gram[range(adapter.in_channels), range(adapter.in_channels)] += penalty  # the bias is not shrunk
            solution = torch.linalg.solve(gram.double(), cross.double()).to(adapter.weight.dtype)
            adapter.weight.copy_(solution[:-1].T.reshape(adapter.weight.shape))
            adapter.bias.copy_(solution[-1])
        self.fitted.fill_(True)

    def spread(self, target: torch.Tensor) -> torch.Tensor:
        """The mean over channels of the map's variance over the (global) batch's cells."""
        flat = target.transpose(0, 1).reshape(target.shape[1], -1)  # (channels, cells)
        cells, total, squares = self.reduce(torch.stack([flat.new_full((flat.shape[0],), flat.shape[1]),
                                                         flat.sum(1), flat.pow(2).sum(1)]))
        mean = total / cells
        return (squares / cells - mean * mean).mean().clamp_min(1e-6)

    def forward(self, student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        if not bool(self.fitted):
            self.fit(student_maps, teacher_maps)
        losses = []
        for adapter, (s, t) in zip(self.adapters, self.pairs):
            target = teacher_maps[t].detach().float()
            losses.append(F.mse_loss(adapter(student_maps[s].float()), target) / self.spread(target))
        return self.weight * torch.stack(losses).mean()


class HeadInputGraph(nn.Module):
    """A detector whose outputs are its head inputs, level by level: the graph a feature teacher exports. The
    tap lives for one call only, so the copy the exporter traces carries no hook."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tap = HeadInputTap(self.model)
        try:
            self.model(images)
            return tuple(tap.take())
        finally:
            tap.remove()


class FeatureTeacher:
    """A model teacher's head inputs on a batch (eval mode, no gradients): in PyTorch, or through ONNX Runtime
    once :meth:`use_onnx_runtime` ran."""

    def __init__(self, model: nn.Module):
        self.model = model.eval().requires_grad_(False)
        self.tap = HeadInputTap(self.model)
        self._session = None

    def use_onnx_runtime(self, threads: int) -> None:
        """Run the teacher as an ONNX graph of its head inputs (exported here, in memory; BatchNorm folded)
        with ``threads`` intra-op threads. On a CPU it takes about a third of PyTorch's time for
        mobilenet0.25_Final on a batch of 32 at 320 px, and the teacher's pass is on every step."""
        from ..export.onnx import export_copy, trace_input, traced_graph
        from ..runtime.onnx_runner import cpu_session

        self.tap.remove()  # PyTorch runs the teacher no more, and the exported copy carries no hook
        names = [f"level{i}" for i in range(len(self.tap.names))]
        dynamic = {name: {0: "batch", 2: "height", 3: "width"} for name in (INPUT_NAME, *names)}
        proto = traced_graph(export_copy(HeadInputGraph(self.model)), trace_input(self.model), names, dynamic)
        self._session = cpu_session(proto.SerializeToString(), threads, "the feature teacher's graph")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self._session is not None:
            batch = np.ascontiguousarray(images.float().cpu().numpy())
            return [torch.from_numpy(m) for m in self._session.run(None, {INPUT_NAME: batch})]
        self.model(images)
        return self.tap.take()


@torch.no_grad()
def head_input_shapes(model: nn.Module, tap: HeadInputTap, size: int) -> tuple[list[int], list[tuple[int, int]]]:
    """The widths and sizes of ``model``'s head inputs on a ``size`` x ``size`` input (one probe pass in eval
    mode, so no BatchNorm statistic moves; the model's mode is restored)."""
    was_training = model.training
    parameter = next(model.parameters())
    model.eval()
    try:
        model(torch.zeros(1, 3, size, size, device=parameter.device))
    finally:
        model.train(was_training)
    maps = tap.take()
    return [m.shape[1] for m in maps], [tuple(m.shape[-2:]) for m in maps]


def build_feature_imitation(student: nn.Module, student_strides: Sequence[int], teacher: nn.Module,
                            teacher_strides: Sequence[int], weight: float, input_size: int,
                            reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
                            ) -> tuple[HeadInputTap, FeatureTeacher, FeatureImitationLoss]:
    """The student's tap, the teacher and the loss for a run (``reduce``: :class:`FeatureImitationLoss`'s); the
    paired levels must have the same map sizes on a training input (``input_size``), else a one-line error
    before training starts."""
    pairs = pair_levels(student_strides, teacher_strides)
    student_tap, feature_teacher = HeadInputTap(student), FeatureTeacher(teacher)
    s_channels, s_sizes = head_input_shapes(student, student_tap, input_size)
    t_channels, t_sizes = head_input_shapes(teacher, feature_teacher.tap, input_size)
    for s, t in pairs:
        if s_sizes[s] != t_sizes[t]:
            raise BlazefaceError(f"the feature teacher's stride-{student_strides[s]} maps are {t_sizes[t]} at "
                                 f"{input_size} px, the student's {s_sizes[s]}: the levels do not line up")
    return student_tap, feature_teacher, FeatureImitationLoss(pairs, s_channels, t_channels, weight, reduce=reduce)
