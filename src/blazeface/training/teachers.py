"""Teachers for distillation: frozen detectors that label exactly the augmented view the student trains on.

A teacher is named by a spec (``blazeface train --teacher SPEC``, repeatable):

- ``MODEL:WEIGHTS`` for any registered model (``mnet:.../mobilenet0.25_Final.pth``). When MODEL has the
  student's priors (its own architecture, or blaze for blazelite, rfb for slim) the teacher is *dense*: it
  runs on the batch in the training process and its per-prior outputs are matched prior for prior
  (:class:`~blazeface.training.loss.DenseDistillationLoss`).
  Otherwise it is a *detection* teacher like the two below.
- ``yunet:PATH.onnx``: YuNet through OpenCV's ``cv2.FaceDetectorYN``; with ``--map-teacher-priors`` it teaches per
  prior instead: its raw outputs on the batch, decoded into candidate faces, carried onto the student's priors.
- ``centerface:PATH.onnx``: CenterFace through ONNX Runtime; with ``--map-teacher-priors`` it teaches per prior as
  YuNet does (the peaks of its stride-4 heatmap are the candidate faces). Several such grid teachers pool their
  candidates.

Detection teachers run in the data workers on the augmented uint8 crop (:class:`TeacherLabelling`), their
detections of several teachers are fused (:func:`fuse_detections`, weighted box fusion) and merged into the
crop's ground truth as soft, never-negative targets (:func:`merge_teacher_faces`). Their heavy runtimes are
created lazily in the process that first uses them, so a teacher pickles into a worker as its spec alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import cv2
import numpy as np
import torch

from ..box_coding import decode_boxes, decode_landmarks, encode_boxes, encode_landmarks
from ..config import PriorConfig
from ..errors import BlazefaceError
from ..geometry import box_iou
from ..matching import COMPENSATION_IOU, FORCED_MIN_IOU, POS_IOU, prior_pairs, priors_to_corners
from ..models import create_model, get_config, list_models
from ..priors import prior_boxes

DETECTION_KINDS = ("yunet", "centerface")


class TeacherFaces(NamedTuple):
    """Detections in image pixels: ``boxes`` (N, 4) ``x1 y1 x2 y2``, ``landmarks`` (N, 5, 2) in this
    project's order (image-left eye, image-right eye, nose, image-left / image-right mouth corner),
    ``scores`` (N,)."""

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> "TeacherFaces":
        return TeacherFaces(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:  # NamedTuple's len would count its fields
        return int(self.scores.shape[0])


class Candidates(NamedTuple):
    """One image's candidate faces for a per-prior teacher, in normalised image coordinates (the priors'
    units): ``probability`` (K,), ``boxes`` (K, 4) ``x1 y1 x2 y2``, ``points`` (K, 10)."""

    probability: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor


@dataclass(frozen=True)
class TeacherSpec:
    kind: str  # "yunet", "centerface" or a registered model name
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_teacher_spec(spec: str) -> TeacherSpec:
    """``KIND:PATH``; a missing file or unknown kind is a one-line error (before any training starts)."""
    kind, sep, path = str(spec).partition(":")
    if not sep or not path:
        raise BlazefaceError(f"--teacher {spec}: expected KIND:PATH, e.g. yunet:yunet_n_dynamic.onnx or "
                             "mnet:mobilenet0.25_Final.pth")
    if kind not in DETECTION_KINDS and kind not in list_models():
        raise BlazefaceError(f"--teacher {spec}: unknown teacher {kind!r}; choose one of: "
                             f"{', '.join(DETECTION_KINDS + tuple(list_models()))}")
    if not Path(path).is_file():
        raise BlazefaceError(f"--teacher {spec}: {path}: file not found")
    return TeacherSpec(kind, Path(path))


# -- detection teachers ----------------------------------------------------------------------------------

class _LazyRuntime:
    """A detection teacher whose runtime handle (an OpenCV net, an ONNX Runtime session) opens on first use
    and is never pickled: each data worker receives the teacher's settings and opens its own."""

    _runtime = None

    def __getstate__(self):
        return {**self.__dict__, "_runtime": None}

    def _open(self):
        raise NotImplementedError

    def load(self):
        """Open the runtime now (a broken file is a one-line error before training starts)."""
        if self._runtime is None:
            self._runtime = self._open()
        return self


def _checked_scales(name: str, scales: Sequence[float]) -> tuple[float, ...]:
    if not scales or any(s <= 0 for s in scales):
        raise BlazefaceError(f"{name} teacher scales must be positive, got {list(scales)}")
    return tuple(float(s) for s in scales)


class GridTeacher(_LazyRuntime):
    """A detector without priors whose every grid cell predicts a face (YuNet, CenterFace): per prior
    (``--map-teacher-priors``) its cells above a probability are the candidate faces that
    :class:`PriorMapping` carries onto the student's priors. Subclasses give :meth:`grid_candidates` and
    ``scales``: the teacher also runs on the batch resized by each factor other than 1, and every scale's
    candidates are offered together (each student prior then takes the most probable one that reaches it)."""

    scales: tuple[float, ...] = (1.0,)

    def grid_candidates(self, images: torch.Tensor, mean_bgr: Sequence[float], min_probability: float,
                        device="cpu") -> list[Candidates]:
        raise NotImplementedError

    def use_onnx_runtime(self, threads: int) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def candidates(self, images: torch.Tensor, mean_bgr: Sequence[float], min_probability: float) -> list[Candidates]:
        """The candidate faces (:meth:`grid_candidates`) whose face probability is at least ``min_probability``,
        per image of a student's batch (BGR minus ``mean_bgr``, any layout), as :class:`Candidates` in the batch's
        normalised coordinates; with several ``scales``, each image's candidates of every scale, concatenated."""
        per_scale = []
        for scale in self.scales:
            scaled = images if scale == 1 else torch.nn.functional.interpolate(
                images.float(), scale_factor=scale, mode="bilinear", align_corners=False)
            per_scale.append(self.grid_candidates(scaled, mean_bgr, min_probability, images.device))
        return pool_candidates(per_scale)


def pool_candidates(parts: Sequence[list[Candidates]]) -> list[Candidates]:
    """Several sources' candidates of one batch (scales, grid teachers) as one offer per image."""
    if len(parts) == 1:
        return parts[0]
    return [Candidates(*(torch.cat(fields) for fields in zip(*found))) for found in zip(*parts)]


class YuNetTeacher(GridTeacher):
    """YuNet (``cv2.FaceDetectorYN``) on BGR uint8 images of any size.

    ``scales``: per prior (:meth:`candidates`). Enlarged 2x, YuNet finds the faces under ~10 pixels it misses at
    1x (its smallest anchors are 8 pixels at stride 8), and the large faces stay with the 1x pass."""

    def __init__(self, path: Path, score_threshold: float = 0.3, nms: float = 0.45, top_k: int = 1000,
                 scales: Sequence[float] = (1,)):
        self.path, self.score_threshold, self.nms, self.top_k = Path(path), score_threshold, nms, top_k
        self.scales = _checked_scales("YuNet", scales)

    def _open(self):
        try:
            return cv2.FaceDetectorYN.create(str(self.path), "", (320, 320), self.score_threshold, self.nms,
                                             self.top_k)
        except cv2.error as exc:
            raise BlazefaceError(f"{self.path}: OpenCV cannot load this YuNet model "
                                 f"({str(exc).strip().splitlines()[-1]})") from None

    # YuNet's heads: one grid per stride, an anchor-free prediction per cell (OpenCV's FaceDetectorYN decoding).
    STRIDES = (8, 16, 32)
    _raw = None  # the bare network for candidates(): OpenCV's DNN, or an ONNX Runtime session

    def __getstate__(self):
        return {**super().__getstate__(), "_raw": None}

    def use_onnx_runtime(self, threads: int) -> None:
        """Run :meth:`candidates` through ONNX Runtime (about twice as fast as OpenCV's DNN on a batch)."""
        from ..runtime.onnx_runner import cpu_session

        session = cpu_session(self.path, threads, f"YuNet teacher {self.path}")
        names = [o.name for o in session.get_outputs()]
        self._raw = lambda batch: dict(zip(names, session.run(None, {session.get_inputs()[0].name: batch})))

    def _raw_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self._raw is None:
            net = cv2.dnn.readNetFromONNX(str(self.path))
            names = list(net.getUnconnectedOutLayersNames())

            def run(x):
                net.setInput(x)
                return dict(zip(names, net.forward(names)))
            self._raw = run
        return self._raw(batch)

    def grid_candidates(self, images: torch.Tensor, mean_bgr: Sequence[float], min_probability: float,
                        device="cpu") -> list[Candidates]:
        """:meth:`candidates` of one scale, the batch as it is. The probability is YuNet's own score, the
        geometric mean of its class and objectness outputs; boxes and landmarks decode as OpenCV's
        FaceDetectorYN decodes them (checked against it to 3e-5 px). The batch is padded bottom/right to a
        multiple of 32 with the mean colour, as the inference pipeline pads."""
        batch, _, height, width = images.shape
        padded_h, padded_w = -(-height // 32) * 32, -(-width // 32) * 32
        mean = np.asarray(mean_bgr, np.float32).reshape(1, 3, 1, 1)
        x = np.broadcast_to(mean, (batch, 3, padded_h, padded_w)).copy()
        x[:, :, :height, :width] += images.float().cpu().numpy()
        outputs = self._raw_outputs(x)
        scale = np.array([width, height], np.float32)
        found = []
        for b in range(batch):
            probability, boxes, points = [], [], []
            for stride in self.STRIDES:
                score = np.sqrt(outputs[f"cls_{stride}"][b, :, 0].clip(0, 1) * outputs[f"obj_{stride}"][b, :, 0].clip(0, 1))
                cells = np.nonzero(score >= min_probability)[0]
                row, col = np.divmod(cells, padded_w // stride)
                cell = np.stack([col, row], 1).astype(np.float32)
                box = outputs[f"bbox_{stride}"][b, cells]
                centre, size = (cell + box[:, :2]) * stride, np.exp(box[:, 2:]) * stride
                probability.append(score[cells])
                boxes.append(np.concatenate([centre - size / 2, centre + size / 2], 1) / np.tile(scale, 2))
                kps = outputs[f"kps_{stride}"][b, cells].reshape(-1, 5, 2)
                points.append(((kps + cell[:, None]) * stride / scale).reshape(-1, 10))
            found.append(Candidates(*(torch.from_numpy(np.concatenate(a).astype(np.float32)).to(device)
                                      for a in (probability, boxes, points))))
        return found

    def detect(self, image: np.ndarray) -> TeacherFaces:
        net = self.load()._runtime
        h, w = image.shape[:2]
        net.setInputSize((w, h))
        _, rows = net.detect(image)
        if rows is None or len(rows) == 0:
            return TeacherFaces.empty()
        rows = rows.astype(np.float32)
        boxes = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], 1)
        return TeacherFaces(boxes, rows[:, 4:14].reshape(-1, 5, 2), rows[:, 14])


class CenterFaceTeacher(GridTeacher):
    """CenterFace (ONNX Runtime): RGB input at a multiple of 32, outputs heatmap, log-scale, offset and
    landmarks at stride 4; decoded as its reference implementation does, then NMS. Per prior, every peak of the
    heatmap (a cell no lower than its 8 neighbours) at ``min_probability`` or more is a candidate face (at each
    of ``scales``): only a face's centre cell learnt its box and landmarks (a CenterNet), where every cell of
    YuNet's grid near a face predicts one; the cells around a peak would offer boxes centred on themselves, and
    a face would bring a hundred of them to the carry's 1,000 candidates."""

    STRIDE = 4

    def __init__(self, path: Path, score_threshold: float = 0.3, nms: float = 0.3, scales: Sequence[float] = (1,)):
        self.path, self.score_threshold, self.nms = Path(path), score_threshold, nms
        self.scales = _checked_scales("CenterFace", scales)
        self.threads = 1

    def _open(self):
        from ..runtime.onnx_runner import cpu_session

        return cpu_session(self._dynamic_model(), self.threads, f"CenterFace teacher {self.path}")

    def use_onnx_runtime(self, threads: int) -> None:
        """CenterFace always runs in ONNX Runtime: here, on ``threads`` threads."""
        self.threads, self._runtime = threads, None
        self.load()

    def _dynamic_model(self) -> bytes:
        """The file declares a fixed 10x3x32x32 input: give batch, height and width symbolic sizes (the
        network is fully convolutional), as its reference runtime does."""
        import onnx

        model = onnx.load(str(self.path))
        for value in [*model.graph.input[:1], *model.graph.output]:
            dims = value.type.tensor_type.shape.dim
            for index, name in ((0, "batch"), (2, "height"), (3, "width")):
                dims[index].ClearField("dim_value")
                dims[index].dim_param = name
        return model.SerializeToString()

    def _outputs(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Heatmap, log-scale, offset and landmarks of an (N, 3, H, W) float RGB batch in 0-255, padded here
        bottom/right with black to a multiple of 32 (as the reference implementation pads)."""
        n, _, h, w = rgb.shape
        blob = np.zeros((n, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
        blob[:, :, :h, :w] = rgb
        session = self.load()._runtime
        return session.run(None, {session.get_inputs()[0].name: blob})

    def _decode(self, outputs: list[np.ndarray], b: int, threshold: float, peaks: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image ``b``'s heatmap cells above ``threshold`` (``peaks``: its peaks at ``threshold`` or more) ->
        boxes (K, 4) and landmarks (K, 5, 2) in the padded input's pixels, and scores (K,)."""
        heatmap, scale, offset, points = outputs
        heat = np.ascontiguousarray(heatmap[b, 0])
        if peaks:
            ys, xs = np.nonzero((heat >= threshold) & (heat >= cv2.dilate(heat, np.ones((3, 3), np.uint8))))
        else:
            ys, xs = np.nonzero(heat > threshold)
        H, W = heat.shape[0] * self.STRIDE, heat.shape[1] * self.STRIDE
        s = self.STRIDE
        bh, bw = np.exp(scale[b, 0, ys, xs]) * s, np.exp(scale[b, 1, ys, xs]) * s
        x1 = np.clip((xs + offset[b, 1, ys, xs] + 0.5) * s - bw / 2, 0, W)
        y1 = np.clip((ys + offset[b, 0, ys, xs] + 0.5) * s - bh / 2, 0, H)
        boxes = np.stack([x1, y1, np.minimum(x1 + bw, W), np.minimum(y1 + bh, H)], 1).astype(np.float32)
        lm = points[b][:, ys, xs].T.reshape(-1, 5, 2)  # (y, x) pairs relative to the box, in box units
        landmarks = np.stack([lm[..., 1] * bw[:, None] + x1[:, None], lm[..., 0] * bh[:, None] + y1[:, None]], -1)
        return boxes, landmarks.astype(np.float32), heat[ys, xs].astype(np.float32)

    def grid_candidates(self, images: torch.Tensor, mean_bgr: Sequence[float], min_probability: float,
                        device="cpu") -> list[Candidates]:
        """:meth:`candidates` of one scale, the batch as it is: the student's BGR-minus-mean batch back to RGB
        pixels, every heatmap peak at ``min_probability`` or more decoded as :meth:`detect` decodes it."""
        _, _, height, width = images.shape
        bgr = images.float().cpu().numpy() + np.asarray(mean_bgr, np.float32).reshape(1, 3, 1, 1)
        outputs = self._outputs(np.ascontiguousarray(bgr[:, ::-1]))
        scale = np.array([width, height], np.float32)
        found = []
        for b in range(images.shape[0]):
            boxes, landmarks, scores = self._decode(outputs, b, min_probability, peaks=True)
            found.append(Candidates(*(torch.from_numpy(a).to(device) for a in (
                scores, boxes / np.tile(scale, 2), (landmarks / scale).reshape(-1, 10).astype(np.float32)))))
        return found

    def detect(self, image: np.ndarray) -> TeacherFaces:
        h, w = image.shape[:2]
        outputs = self._outputs(image[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32))
        boxes, landmarks, scores = self._decode(outputs, 0, self.score_threshold, peaks=False)
        if len(scores) == 0:
            return TeacherFaces.empty()
        keep = cv2.dnn.NMSBoxes([[float(a), float(b), float(c - a), float(d - b)] for a, b, c, d in boxes],
                                scores.tolist(), self.score_threshold, self.nms)
        keep = np.asarray(keep, np.int64).reshape(-1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return TeacherFaces(boxes[keep], landmarks[keep], scores[keep])


class ModelTeacher:
    """Any registered model with its weights (torch, eval mode, no gradients).

    As a dense teacher (the student's priors) it maps a batch to raw ``(loc, conf, landm)``; as
    a detection teacher it runs the package's own inference pipeline on one image."""

    def __init__(self, name: str, path: Path, score_threshold: float = 0.3):
        self.name, self.path, self.score_threshold = name, Path(path), score_threshold
        self._model = None
        self._detector = None
        self._onnx = None  # an OnnxRunner once use_onnx_runtime() ran: dense() goes through it

    def __getstate__(self):
        return {**self.__dict__, "_model": None, "_detector": None, "_onnx": None}

    def model(self) -> torch.nn.Module:
        if self._model is None:
            model = create_model(self.name, weights=self.path)  # a mismatched file is a one-line error
            model.eval().requires_grad_(False)
            self._model = model
        return self._model

    def use_onnx_runtime(self, threads: int) -> None:
        """Run :meth:`dense` through ONNX Runtime with ``threads`` intra-op threads: the runner the onnx backend
        builds (the weights exported once, BatchNorm folded, and cached like any export). On a CPU its forward
        pass takes about half of PyTorch's, and the teachers' forward passes are half of a distilling step
        (``benchmarks/bench_train_step.py --teacher-runtime``)."""
        from ..backends import make_runner

        self._onnx = make_runner("onnx", self.name, self.path, threads=threads)

    @torch.no_grad()
    def dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw outputs on a batch, the class part as logits: in eval mode the detectors return softmax
        probabilities (as the originals, so exports carry the softmax), and their logarithm is a logit pair
        with that softmax, which the distillation loss then tempers."""
        if self._onnx is not None:
            loc, conf, landm = (torch.from_numpy(a) for a in self._onnx(images.float().cpu().numpy()))
        else:
            loc, conf, landm = self.model()(images)
        return loc.float(), torch.log(conf.float().clamp_min(1e-12)), landm.float()

    def detect(self, image: np.ndarray) -> TeacherFaces:
        if self._detector is None:
            from ..inference import FaceDetector

            self._detector = FaceDetector(self.name, weights=self.path, backend="torch", conf=self.score_threshold,
                                          long_side=0)
        faces = list(self._detector.detect(image))
        if not faces:
            return TeacherFaces.empty()
        return TeacherFaces(np.stack([f.box for f in faces]).astype(np.float32),
                            np.stack([f.landmarks for f in faces]).astype(np.float32),
                            np.array([f.score for f in faces], np.float32))


def load_teacher(spec: str | TeacherSpec, yunet_scales: Sequence[float] = (1,),
                 centerface_scales: Sequence[float] = (1,)):
    """Build the teacher of ``spec`` and load it once here, so a broken file fails before training starts.
    ``yunet_scales``, ``centerface_scales``: a grid teacher's ``scales`` (:class:`GridTeacher`)."""
    spec = spec if isinstance(spec, TeacherSpec) else parse_teacher_spec(spec)
    if spec.kind == "yunet":
        return YuNetTeacher(spec.path, scales=yunet_scales).load()
    if spec.kind == "centerface":
        return CenterFaceTeacher(spec.path, scales=centerface_scales).load()
    teacher = ModelTeacher(spec.kind, spec.path)
    teacher.model()
    return teacher


def is_dense(teacher, student: str) -> bool:
    """A model teacher with the student's priors (its own architecture, or one laid out alike: blaze for
    blazelite, slim for slimlite, rfb for slim) predicts for the same priors in the same order: distil per prior."""
    return isinstance(teacher, ModelTeacher) and get_config(teacher.name).priors == get_config(student).priors


def teaches_per_prior(teacher, student: str, map_priors: bool = False) -> bool:
    """Whether ``teacher`` distils ``student`` per prior: a model teacher with the student's priors, or with
    ``map_priors`` (``train --map-teacher-priors``) every teacher (model teachers of other priors, YuNet and
    CenterFace); the others teach by their detections."""
    return is_dense(teacher, student) or (map_priors and isinstance(teacher, (ModelTeacher, GridTeacher)))


def mean_dense_outputs(outputs: Sequence[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Same-prior teachers as one: the mean of their ``dense()`` outputs, boxes, landmarks and class
    log-probabilities alike (the loss's softmax then makes the last a normalised geometric mean of their
    probabilities)."""
    if len(outputs) == 1:
        return tuple(outputs[0])
    return tuple(torch.stack(parts).mean(0) for parts in zip(*outputs))


class PriorMapping:
    """A model teacher's raw outputs on its own priors carried onto a student's other priors (blaze taught by
    slim's and rfb's originals), so that the dense loss takes them as a same-prior teacher's.

    Every teacher prior whose face probability is at least ``min_probability`` is a candidate face: its
    decoded box and landmarks, with that probability. Each student prior takes the most probable candidate
    that the student's own matching rule would assign to it (IoU >= ``pos_iou`` with the prior, or the
    prior is the candidate's best one at IoU >= ``forced_min_iou``, or with ``min_positives`` one of its best
    priors down to ``compensation_iou`` while it has fewer: the rule by which its ground truth is matched,
    matching.py), re-encoded against the student prior; its face probability is that candidate's
    (``floor`` when none: plain background). So a tiny face the teacher finds at 0.3 asks the student's priors
    on it for 0.3, where the ground truth asks for 1 and a label-free region for 0. Not :class:`~blazeface.matching.PriorMatcher`:
    it gives a prior the face of best IoU, and a teacher's candidates are many overlapping boxes of one face,
    of which the most probable should win. ``min_probability`` sits
    above what slim's originals give plain background (up to 0.034 on a blank picture): at 0.01 a 320x320
    training crop had ~2,000 candidates and carrying a batch of 32 took 20x longer than at 0.05 (~150).
    ``teacher_priors`` None: a teacher without priors (YuNet's grid) finds its candidates itself, and only
    :meth:`carry` is used."""

    def __init__(self, teacher_priors: PriorConfig | None, student_priors: PriorConfig, *, pos_iou: float = POS_IOU,
                 forced_min_iou: float = FORCED_MIN_IOU, min_probability: float = 0.05, max_candidates: int = 1000,
                 floor: float = 1e-4, min_positives: int = 0, compensation_iou: float = COMPENSATION_IOU):
        self.teacher_priors, self.student_priors = teacher_priors, student_priors
        self.pos_iou, self.forced_min_iou = pos_iou, forced_min_iou
        self.min_positives, self.compensation_iou = int(min_positives), float(compensation_iou)
        self.min_probability, self.max_candidates, self.floor = min_probability, max_candidates, floor
        self._cache: dict = {}

    def _priors(self, priors: PriorConfig, height: int, width: int, device, corners: bool = False) -> torch.Tensor:
        key = (priors, height, width, str(device), corners)
        if key not in self._cache:
            boxes = torch.tensor(prior_boxes(priors, height, width), device=device)
            self._cache[key] = priors_to_corners(boxes) if corners else boxes
        return self._cache[key]

    @torch.no_grad()
    def candidates(self, outputs: tuple[torch.Tensor, ...], height: int, width: int) -> list[Candidates]:
        """``(loc, logits, landm)`` of a batch on the teacher's priors -> each image's candidate faces."""
        loc, logits, landm = (t.float() for t in outputs)
        t_priors, t_var = self._priors(self.teacher_priors, height, width, loc.device), self.teacher_priors.variances
        if loc.shape[1] != t_priors.shape[0]:
            raise BlazefaceError(f"teacher outputs have {loc.shape[1]} priors, its prior layout gives "
                                 f"{t_priors.shape[0]} at {width}x{height}")
        probability = logits.softmax(-1)[..., 1]
        found = []
        for b in range(loc.shape[0]):
            keep = torch.nonzero(probability[b] >= self.min_probability).squeeze(1)
            found.append(Candidates(probability[b, keep], decode_boxes(loc[b, keep], t_priors[keep], t_var),
                                    decode_landmarks(landm[b, keep], t_priors[keep], t_var)))
        return found

    @torch.no_grad()
    def carry(self, candidates: Sequence[Candidates], height: int, width: int,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """Each image's candidate faces -> ``(loc, logits, landm)`` on the student's priors (the class part as
        log-probabilities)."""
        s_priors, s_var = self._priors(self.student_priors, height, width, device), self.student_priors.variances
        s_corners = self._priors(self.student_priors, height, width, device, corners=True)
        batch, num_priors = len(candidates), s_priors.shape[0]
        face = torch.zeros(batch, num_priors, device=device)
        out_loc = torch.zeros(batch, num_priors, 4, device=device)
        out_landm = torch.zeros(batch, num_priors, 10, device=device)
        for b, (p, boxes, points) in enumerate(candidates):
            if p.numel() > self.max_candidates:
                top = p.topk(self.max_candidates).indices
                p, boxes, points = p[top], boxes[top], points[top]
            if p.numel() == 0:
                continue
            reached, chosen, probability = self._reach(p, boxes.to(device), height, width, s_corners)
            face[b, reached] = probability
            out_loc[b, reached] = encode_boxes(boxes.to(device)[chosen], s_priors[reached], s_var)
            out_landm[b, reached] = encode_landmarks(points.to(device)[chosen], s_priors[reached], s_var)
        face = face.clamp(self.floor, 1 - self.floor)
        return out_loc, torch.stack([torch.log1p(-face), torch.log(face)], -1), out_landm

    def _reach(self, p: torch.Tensor, boxes: torch.Tensor, height: int, width: int, s_corners: torch.Tensor):
        """The student priors some candidate reaches by the matching rule, each with its most probable such
        candidate (the lowest index among equals) and that probability. A prior no candidate reaches keeps zero
        offsets (its own box): encoded against a far prior, a candidate's box is a huge offset the student could
        only chase in vain."""
        lowest = min(self.pos_iou, self.forced_min_iou, self.compensation_iou if self.min_positives else 1.0)
        which, prior, iou = prior_pairs(boxes, self.student_priors, height, width, s_corners, lowest)
        # Each candidate's best prior (the lowest index among equals) is reached when its IoU allows it.
        order = torch.argsort(prior, stable=True)
        order = order[torch.argsort(-iou[order], stable=True)]
        order = order[torch.argsort(which[order], stable=True)]
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = which[order][1:] != which[order][:-1]
        best = torch.zeros_like(iou, dtype=torch.bool)
        best[order[first]] = True
        eligible = (iou >= self.pos_iou) | (best & (iou >= self.forced_min_iou))
        if self.min_positives:
            eligible |= self._compensated(which, iou, eligible, len(p))
        which, prior = which[eligible], prior[eligible]
        # For each prior, its most probable candidate: sort by candidate, then probability (descending), then prior.
        order = torch.argsort(which, stable=True)
        order = order[torch.argsort(-p[which[order]], stable=True)]
        order = order[torch.argsort(prior[order], stable=True)]
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = prior[order][1:] != prior[order][:-1]
        chosen = which[order[first]]
        return prior[order[first]], chosen, p[chosen]

    def _compensated(self, which: torch.Tensor, iou: torch.Tensor, eligible: torch.Tensor, count: int) -> torch.Tensor:
        """The pairs by which a candidate with fewer than ``min_positives`` eligible priors reaches its best further
        priors (IoU >= ``compensation_iou``) until it has that many: the ground truth's scale compensation
        (matching.compensated), per candidate."""
        need = (self.min_positives - torch.bincount(which[eligible], minlength=count)).clamp(min=0)
        spare = torch.nonzero(~eligible & (iou >= self.compensation_iou)).squeeze(1)
        order = spare[torch.argsort(-iou[spare], stable=True)]
        order = order[torch.argsort(which[order], stable=True)]  # by candidate, each best first
        owner = which[order]
        starts = torch.searchsorted(owner, owner, right=False)  # the first pair of each pair's candidate
        rank = torch.arange(owner.numel(), device=owner.device) - starts
        extra = torch.zeros_like(eligible)
        extra[order[rank < need[owner]]] = True
        return extra

    def __call__(self, outputs: tuple[torch.Tensor, ...], height: int, width: int) -> tuple[torch.Tensor, ...]:
        """``(loc, logits, landm)`` of a batch on the teacher's priors -> the same on the student's."""
        return self.carry(self.candidates(outputs, height, width), height, width, outputs[0].device)


class DenseTeachers:
    """The teachers a student is distilled from per prior, as one: model teachers with the same priors are
    averaged (:func:`mean_dense_outputs`), groups on other priors than the student's are carried onto its
    priors (:class:`PriorMapping`), and the groups are averaged again. The grid teachers (YuNet, CenterFace) are
    one more group: their candidate faces (:meth:`GridTeacher.candidates`) are pooled, as a teacher's scales
    are, and carried together, so a face one of them misses keeps the other's probability (an average of
    log-probabilities would take it to the floor)."""

    def __init__(self, teachers: Sequence[ModelTeacher | GridTeacher], student: str, min_positives: int = 0,
                 compensation_iou: float = COMPENSATION_IOU):
        config = get_config(student)
        compensation = {"min_positives": min_positives, "compensation_iou": compensation_iou}
        self.student, self.mean_bgr = config.priors, config.mean_bgr
        self.groups: dict[PriorConfig, list[ModelTeacher]] = {}
        self.gridded: list[GridTeacher] = []  # teachers without priors: carried from their candidate faces
        for teacher in teachers:
            if isinstance(teacher, GridTeacher):
                self.gridded.append(teacher)
            else:
                self.groups.setdefault(get_config(teacher.name).priors, []).append(teacher)
        self.mappings = {priors: PriorMapping(priors, self.student, **compensation)
                         for priors in self.groups if priors != self.student}
        self.carrier = PriorMapping(None, self.student, **compensation)
        self.on_onnx = False

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups.values()) + len(self.gridded)

    def use_onnx_runtime(self, threads: int) -> None:
        """Every teacher through ONNX Runtime (:meth:`ModelTeacher.use_onnx_runtime`,
        :meth:`YuNetTeacher.use_onnx_runtime`; CenterFace runs there anyway)."""
        for teacher in self:
            teacher.use_onnx_runtime(threads)
        self.on_onnx = True

    def to(self, device, memory_format=torch.contiguous_format) -> "DenseTeachers":
        """The PyTorch model teachers onto ``device`` (YuNet's network runs on the CPU, whatever the device)."""
        for group in self.groups.values():
            for teacher in group:
                teacher.model().to(device, memory_format=memory_format)
        return self

    def __iter__(self):
        yield from (teacher for group in self.groups.values() for teacher in group)
        yield from self.gridded

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        height, width = images.shape[-2:]
        if self.on_onnx:  # ONNX Runtime takes contiguous NCHW floats: one copy here, not one per teacher
            images = images.float().contiguous()
        parts = []
        for priors, group in self.groups.items():
            outputs = mean_dense_outputs([teacher.dense(images) for teacher in group])
            parts.append(self.mappings[priors](outputs, height, width) if priors in self.mappings else outputs)
        if self.gridded:
            found = pool_candidates([teacher.candidates(images, self.mean_bgr, self.carrier.min_probability)
                                     for teacher in self.gridded])
            parts.append(self.carrier.carry(found, height, width, images.device))
        return mean_dense_outputs(parts)


class DenseEnsembleRunner:
    """Dense teachers as a detector's runner (``FaceDetector(student, runner=...)``): what the student is
    distilled towards, measurable by the evaluation like any model. Batch in, ``(loc, conf, landm)`` on the
    student's priors out, the class part as probabilities, as every runner returns it."""

    def __init__(self, teachers: Sequence[ModelTeacher], student: str):
        self.teachers = DenseTeachers(teachers, student)

    @torch.no_grad()
    def __call__(self, batch: np.ndarray):
        loc, logits, landm = self.teachers(torch.from_numpy(batch))
        return loc.numpy(), torch.softmax(logits, -1).numpy(), landm.numpy()


# -- fusion and merging ----------------------------------------------------------------------------------

def fuse_detections(per_teacher: Sequence[TeacherFaces], iou: float = 0.55) -> TeacherFaces:
    """Weighted box fusion over teachers: detections are clustered greedily by descending score (IoU >=
    ``iou`` with the cluster's fused box); each cluster's box and landmarks are the score-weighted means and
    its score the sum of its members' scores over the number of teachers, so a face only one of two
    teachers sees keeps half its confidence. One teacher: returned unchanged."""
    per_teacher = list(per_teacher)
    if len(per_teacher) == 1:
        return per_teacher[0]
    n_teachers = len(per_teacher)
    boxes = np.concatenate([t.boxes for t in per_teacher]).astype(np.float64)
    if boxes.shape[0] == 0:
        return TeacherFaces.empty()
    points = np.concatenate([t.landmarks for t in per_teacher]).reshape(-1, 10).astype(np.float64)
    scores = np.concatenate([t.scores for t in per_teacher]).astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    fused_boxes: list[np.ndarray] = []
    members: list[list[int]] = []
    for i in order:
        if fused_boxes:
            overlap = box_iou(boxes[i:i + 1], np.stack(fused_boxes))[0]
            best = int(np.argmax(overlap))
            if overlap[best] >= iou:
                members[best].append(int(i))
                w = scores[members[best]]
                fused_boxes[best] = (boxes[members[best]] * w[:, None]).sum(0) / w.sum()
                continue
        fused_boxes.append(boxes[i].copy())
        members.append([int(i)])
    out_boxes, out_points, out_scores = [], [], []
    for group in members:
        w = scores[group]
        out_boxes.append((boxes[group] * w[:, None]).sum(0) / w.sum())
        out_points.append((points[group] * w[:, None]).sum(0) / w.sum())
        out_scores.append(w.sum() / n_teachers)
    return TeacherFaces(np.array(out_boxes, np.float32), np.array(out_points, np.float32).reshape(-1, 5, 2),
                        np.minimum(np.array(out_scores, np.float32), 1.0))


@dataclass(frozen=True)
class TeacherTargets:
    """How a detection teacher's faces enter a crop's targets (defaults live in the model's TrainConfig)."""

    min_score: float = 0.5  # below: the teacher's detection is not used at all
    positive_score: float = 0.7  # at or above, and no label covers it: a positive weighted by its score
    covered_iou: float = 0.5  # a label and a teacher face at this IoU or more are the same face
    landmark_weight: float = 0.5  # teacher landmarks filling a face without landmark labels: x score x this
    min_landmark_size: float = 8.0  # pixels: smaller teacher faces give no landmarks
    supervise_background: bool = True  # non-exhaustive photos (MTFL): the teacher vouches for the background

    @classmethod
    def from_train_config(cls, train) -> "TeacherTargets":
        """The settings a model's :class:`~blazeface.config.TrainConfig` (with its overrides) names."""
        return cls(min_score=train.teacher_min_score, positive_score=train.teacher_positive_score,
                   landmark_weight=train.teacher_landmark_weight)


def merge_teacher_faces(target: dict, faces: TeacherFaces, cfg: TeacherTargets) -> dict:
    """Merge a teacher's detections (crop pixels) into a crop's ground truth (crop pixels).

    - Labels stay hard: every labelled face keeps its box; one without landmarks takes the covering teacher
      face's landmarks, weighted by ``score * landmark_weight``.
    - A teacher face no label covers with ``score >= positive_score`` becomes a face (positive priors
      weighted by its score); one with ``min_score <= score < positive_score`` or partly covered becomes an
      ignore region: never mined as a negative.
    - A non-exhaustive photo (unlabelled faces possible) becomes exhaustive: the teacher's faces and ignore
      regions stand for the faces nobody labelled.

    Adds ``face_weight`` (N,) and ``ignore_boxes`` (M, 4) to the target."""
    out = dict(target)
    n = out["boxes"].shape[0]
    out.setdefault("face_weight", np.ones(n, np.float32))
    ignore = [out.get("ignore_boxes", np.zeros((0, 4), np.float32)).reshape(-1, 4)]
    keep = faces.scores >= cfg.min_score
    faces = TeacherFaces(faces.boxes[keep], faces.landmarks[keep], faces.scores[keep])
    if cfg.supervise_background:
        out["ignore_background"] = False
    if len(faces) == 0:
        out["ignore_boxes"] = np.concatenate(ignore).astype(np.float32)
        return out
    overlap = box_iou(faces.boxes, out["boxes"]) if n else np.zeros((len(faces), 0))
    best_label = overlap.argmax(1) if n else np.full(len(faces), -1)
    best_iou = overlap.max(1) if n else np.zeros(len(faces))
    sizes = np.minimum(faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1])

    has_landmarks = out["has_landmarks"].copy()
    landmarks = out["landmarks"].copy()
    landmark_weight = out["landmark_weight"].copy()
    for i in np.nonzero(best_iou >= cfg.covered_iou)[0]:
        j = best_label[i]
        if not has_landmarks[j] and sizes[i] >= cfg.min_landmark_size:
            has_landmarks[j] = True
            landmarks[j] = faces.landmarks[i]
            landmark_weight[j] = faces.scores[i] * cfg.landmark_weight

    uncovered = best_iou < cfg.covered_iou
    new = uncovered & (best_iou < 0.5 * cfg.covered_iou) & (faces.scores >= cfg.positive_score)
    ignore.append(faces.boxes[uncovered & ~new])
    with_points = sizes[new] >= cfg.min_landmark_size
    out["boxes"] = np.concatenate([out["boxes"], faces.boxes[new]]).astype(np.float32)
    out["landmarks"] = np.concatenate([landmarks, faces.landmarks[new]]).astype(np.float32)
    out["has_landmarks"] = np.concatenate([has_landmarks, with_points])
    out["landmark_weight"] = np.concatenate([landmark_weight,
                                             faces.scores[new] * cfg.landmark_weight]).astype(np.float32)
    out["face_weight"] = np.concatenate([out["face_weight"], faces.scores[new]]).astype(np.float32)
    out["ignore_boxes"] = np.concatenate(ignore).astype(np.float32)
    return out


@dataclass
class TeacherLabelling:
    """An augmentation preset with detection teachers in the loop, for :class:`FaceTrainingDataset`:
    every geometric and photometric step, then the teachers on the resulting uint8 crop, the merge, and
    finally the preset's own ``ToTensor``. The teachers see exactly the view the student trains on."""

    preset: object  # a transforms.Compose ending in ToTensor
    teachers: list = field(default_factory=list)
    targets: TeacherTargets = field(default_factory=TeacherTargets)
    # Running totals of what the teachers added in this process (benchmarks/teacher_targets.py reads them).
    stats: dict = field(default_factory=lambda: dict(crops=0, labelled=0, added=0, ignore_regions=0,
                                                     landmarks_filled=0, teacher_seconds=0.0))

    def __call__(self, image, target, rng=None):
        *augment, to_tensor = self.preset.transforms
        for step in augment:
            image, target = step(image, target, rng)
        start = time.perf_counter()
        faces = fuse_detections([t.detect(image) for t in self.teachers])
        self.stats["teacher_seconds"] += time.perf_counter() - start
        labelled, had_landmarks = len(target["boxes"]), int(target["has_landmarks"].sum())
        target = merge_teacher_faces(target, faces, self.targets)
        self.stats["crops"] += 1
        self.stats["labelled"] += labelled
        self.stats["added"] += len(target["boxes"]) - labelled
        self.stats["ignore_regions"] += len(target["ignore_boxes"])
        self.stats["landmarks_filled"] += int(target["has_landmarks"][:labelled].sum()) - had_landmarks
        h, w = image.shape[:2]
        tensor, target = to_tensor(image, target, rng)
        scale = np.array([1.0 / w, 1.0 / h, 1.0 / w, 1.0 / h], np.float32)
        target["ignore_boxes"] = torch.from_numpy(target["ignore_boxes"] * scale)
        target["face_weight"] = torch.from_numpy(target["face_weight"])
        return tensor, target

