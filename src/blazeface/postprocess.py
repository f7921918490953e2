"""The one post-processing path every backend (PyTorch, ONNX Runtime, ncnn) feeds:
confidence threshold -> top-k -> decode -> NMS -> keep-top-k -> landmark vote.

The browser's JavaScript port (web/) mirrors this file and is tested against it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import defaults
from .box_coding import decode_boxes, decode_landmarks
from .geometry import paired_iou_pixel
from .results import Detections


@dataclass(frozen=True)
class PostprocessConfig:
    conf: float = defaults.CONF  # keep candidates with face score > conf
    nms: float = defaults.NMS  # suppress boxes whose IoU with a better kept box is > nms
    top_k: int = defaults.TOP_K  # best candidates entering NMS
    keep_top_k: int = defaults.KEEP_TOP_K  # detections kept after NMS
    # landmarks averaged over the candidates overlapping a kept box by IoU > this (None: its own only)
    landmark_vote: float | None = defaults.LANDMARK_VOTE


# --- NMS ----------------------------------------------------------------------------------------------
# Exact greedy NMS without a Python loop over boxes, in three whole-array steps:
#   1. candidate pairs: a superset of every pair whose IoU can exceed the threshold (an x-sweep for
#      few boxes, a size-aware spatial index for many);
#   2. the float32 IoU of just those pairs, computed exactly as the classic loop does, so every
#      suppression decision matches it bit for bit;
#   3. the greedy order resolved over the resulting "suppresses" graph in a few vectorised rounds.
# Inputs the pruning arguments do not cover (negative or NaN thresholds, non-finite or empty boxes,
# pathological pair counts) take the classic loop itself, so the result is the loop's in every case.

# Up to this many boxes the plain x-sweep is cheaper than building the spatial index (postprocess at
# display confidence sees ~10-300 boxes; evaluation at confidence 0.01 up to top_k = 5000).
_SWEEP_MAX = 600
# The index's search windows grow like 1/threshold; below this (relaxed) threshold the x-sweep is used.
_MIN_INDEX_THRESHOLD = 0.2
# Row height of the index, as a multiple of the mean vertical search radius of a size octave: shorter
# rows give fewer false candidates but more searches; 1.0 measured best on detector output.
_ROW_FRACTION = 1.0
# Beyond this many candidate pairs (degenerate inputs such as thousands of identical boxes) the memory
# of the pair arrays is not worth it: the classic loop, which settles such clusters at once, takes over.
_MAX_PAIRS = 2_000_000


def _columns(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Separate contiguous float32 columns: gathers from 1-D arrays are several times cheaper than
    # 2-D fancy indexing, and float32 is what the classic loop computes in.
    boxes = np.asarray(boxes)
    if boxes.ndim != 2:  # e.g. an empty list
        boxes = boxes.reshape(-1, 4)
    return tuple(np.ascontiguousarray(boxes[:, k], dtype=np.float32) for k in range(4))


def _greedy_loop(x1, y1, x2, y2, order: np.ndarray, threshold) -> np.ndarray:
    """The classic loop, statement for statement: the definition of the result, and the fallback."""
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        ovr = paired_iou_pixel(x1, y1, x2, y2, areas, np.full(len(rest), i), rest)
        order = rest[ovr <= threshold]
    return np.array(keep, np.int64)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """The original repositories' greedy NMS loop (float32, +1 pixel convention): the definition
    :func:`nms` reproduces, and the baseline the post-processing benchmark compares with."""
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k], dtype=np.float32) for k in range(4))
    return _greedy_loop(x1, y1, x2, y2, np.lexsort((np.arange(len(scores)), -scores)), threshold)


def _prunable(x1, y1, x2, y2, threshold) -> tuple[float, float] | None:
    """(threshold, smallest side) where pair pruning is sound, else None.

    Pruning needs IoU > threshold to imply overlap: a threshold >= 0 (not NaN) and finite boxes of
    positive width and height (empty boxes make 0/0 IoUs, which the loop treats its own way).
    """
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        return None
    if not t >= 0:
        return None
    w = x2.astype(np.float64) - x1 + 1
    h = y2.astype(np.float64) - y1 + 1
    side = min(float(w.min()), float(h.min()))
    if not (side > 0 and np.isfinite(w).all() and np.isfinite(h).all() and np.isfinite(x1).all()
            and np.isfinite(y1).all()):
        return None
    return t, side


def _expand(src: np.ndarray, lo: np.ndarray, counts: np.ndarray):
    """Ranges [lo, lo + count) owned by ``src`` -> flat (owner, member) arrays, or None if too many."""
    total = int(counts.sum())
    if total > _MAX_PAIRS:
        return None
    first = np.repeat(src, counts)
    second = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    second += np.arange(total)
    return first, second


def _sweep_pairs(x1, x2):
    """Candidate pairs for any threshold >= 0: all pairs overlapping in x, each once.

    IoU > 0 needs a positive float32 intersection width, fl(fl(min x2 - max x1) + 1) > 0, which (rounding
    being monotonic) implies min x2 - max x1 > -1 exactly. So with boxes sorted by x1, a box's partners
    start after it and before its x2 + 1 (computed exactly in float64).
    Returns (order, first, second): positions in the x1 order, or None if there are too many.
    """
    order = np.argsort(x1, kind="stable")
    start = x1[order].astype(np.float64)
    end = np.searchsorted(start, x2[order].astype(np.float64) + 1, "left")
    n = len(x1)
    lo = np.arange(1, n + 1)
    found = _expand(np.arange(n), lo, np.maximum(end - lo, 0))
    return None if found is None else (order, *found)


def _size_level(s: np.ndarray) -> np.ndarray:
    # Octave of the size: exact and monotonic in s (frexp reads the float's exponent), so a bound on
    # sizes maps to a bound on octaves with no rounding doubt.
    return np.frexp(s)[1]


def _index_pairs(x1, y1, x2, y2, t: float):
    """Candidate pairs for threshold ``t`` (already relaxed for rounding, >= ~0.2), each pair once.

    Why no pair is missed. IoU > t implies, in x (likewise in y), with widths W = x2 - x1 + 1:
      * intersection width > t * max(W_i, W_j) (as intersection <= width * min height, union >= each
        area), so the widths are within a factor 1/t of each other, and
      * |centre distance| < (W_i + W_j)/2 - t*max(W_i, W_j) <= c * min(W_i, W_j), with
        c = 1 - t for t >= 1/2 and c = (1 - t) / (2t) below (using the factor-1/t bound).
    So the partner lies within c times the SMALLER box's size of the centre: inside the window of c
    times its own size around EITHER box. Each box need only search its own window, and a pair is
    found from whichever of its two boxes the index searches from.

    The index: boxes sorted by (size octave, row of centre y, centre x), row heights proportional to
    each octave's window. A box searches, in its own octave, the rest of its row (forward in x) and the
    following rows its window reaches, and in the larger octaves its sizes allow (up to 1/t times its
    own) every row its window covers. So a pair is generated once, from the earlier (same octave) or
    the smaller box, and windows of big boxes are never scanned for small ones. Rows are found by
    binary search on integer keys (row << 31 | x quantised with floor, which is monotonic, so windows
    stay supersets). Returns (order, first, second) as positions in the index order, or None.
    """
    n = len(x1)
    X1, Y1 = x1.astype(np.float64), y1.astype(np.float64)
    X2, Y2 = x2.astype(np.float64), y2.astype(np.float64)
    w, h = X2 - X1 + 1, Y2 - Y1 + 1
    c = (1 - t) if t >= 0.5 else (1 - t) / (2 * t)
    # Doubled centres (x1 + x2) avoid a division; radii are doubled to match, and padded so float64
    # rounding of centres and bounds can only widen the windows.
    cx, cy = X1 + X2, Y1 + Y2
    rx = (2 * c * (1 + 1e-9)) * w + 1e-6
    ry = (2 * c * (1 + 1e-9)) * h + 1e-6
    rx_max, ry_max = float(rx.max()), float(ry.max())
    cx = cx - cx.min() + rx_max + 1  # every window now starts above 0
    cy = cy - cy.min() + ry_max + 1
    size = np.maximum(w, h)
    level = _size_level(size)
    level_min = int(level.min())
    level -= level_min
    n_levels = int(level.max()) + 1
    counts = np.bincount(level, minlength=n_levels)
    row_height = np.bincount(level, weights=ry, minlength=n_levels) / np.maximum(counts, 1) * _ROW_FRACTION
    row_height[counts == 0] = row_height[counts > 0].max()  # octaves without boxes are never searched
    rows_per_level = int((cy.max() + ry_max) / row_height.min()) + 2
    x_scale = 2.0 ** 30 / (cx.max() + rx_max + 1)
    if n_levels * rows_per_level >= 2 ** 31 or not np.isfinite(x_scale):
        return None  # keys would overflow: boxes tiny against their spread
    band = np.floor(cy / row_height[level]).astype(np.int64)
    row = level * rows_per_level + band
    key = (row << 31) + np.floor(cx * x_scale).astype(np.int64)
    order = np.argsort(key)
    key = key[order]
    level, band, row = level[order], band[order], row[order]
    cx, cy, rx, ry, size = cx[order], cy[order], rx[order], ry[order], size[order]
    x_lo = np.floor((cx - rx) * x_scale).astype(np.int64)
    x_hi = np.floor((cx + rx) * x_scale).astype(np.int64)

    # Search batches are built in index order, so their keys come nearly sorted, which makes
    # searchsorted several times faster than on shuffled keys.
    src_parts = [np.arange(n)]
    lo_parts = [np.arange(1, n + 1)]  # own row: right after the box itself
    hi_parts = [np.searchsorted(key, (row << 31) + x_hi, "right")]

    def search(src, query_row):
        src_parts.append(src)
        lo_parts.append(np.searchsorted(key, (query_row << 31) + x_lo[src], "left"))
        hi_parts.append(np.searchsorted(key, (query_row << 31) + x_hi[src], "right"))

    # Same octave: the following rows the window reaches.
    extra_rows = np.floor((cy + ry) / row_height[level]).astype(np.int64) - band
    for k in range(1, int(extra_rows.max()) + 1):
        src = np.flatnonzero(extra_rows >= k)
        search(src, row[src] + k)
    # Larger octaves, up to size / t: every row the window covers.
    top = np.minimum(_size_level(size * ((1 + 1e-9) / t)) - level_min, n_levels - 1)
    for up in range(1, int((top - level).max(initial=0)) + 1):
        src = np.flatnonzero(top - level >= up)
        src = src[counts[level[src] + up] > 0]
        if len(src) == 0:
            continue
        target = level[src] + up
        height = row_height[target]
        first_row = np.floor((cy[src] - ry[src]) / height).astype(np.int64)
        n_rows = np.floor((cy[src] + ry[src]) / height).astype(np.int64) - first_row + 1
        base = target * rows_per_level + first_row
        for k in range(int(n_rows.max())):
            sel = np.flatnonzero(n_rows > k)
            search(src[sel], base[sel] + k)

    lo = np.concatenate(lo_parts)
    found = _expand(np.concatenate(src_parts), lo, np.maximum(np.concatenate(hi_parts) - lo, 0))
    return None if found is None else (order, *found)


def _candidate_pairs(x1, y1, x2, y2, threshold):
    """(order, first, second) from the cheapest sound method, or None where only the loop is sound."""
    ok = _prunable(x1, y1, x2, y2, threshold)
    if ok is None:
        return None
    t, side = ok
    if len(x1) > _SWEEP_MAX:
        # The float32 IoU the loop compares is within a relative ~1e-5 / side of the real-number IoU
        # (a few roundings of quantities that, for a pair near the threshold, are >= t * side), so
        # pruning with a threshold 1e-3 lower never drops a pair the loop would suppress.
        relaxed = min(t - 1e-3 - 1e-5 / side, 1 - 1e-3)
        if relaxed >= _MIN_INDEX_THRESHOLD:
            found = _index_pairs(x1, y1, x2, y2, relaxed)
            if found is not None:
                return found
    return _sweep_pairs(x1, x2)


def nms_pairs(boxes: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), each unordered pair once, including every pair with IoU > ``threshold``
    (pixel convention, +1): a superset, to be filtered with :func:`pair_iou`. All pairs where no
    pruning is sound (negative threshold, degenerate boxes)."""
    x1, y1, x2, y2 = _columns(boxes)
    found = _candidate_pairs(x1, y1, x2, y2, threshold) if len(x1) > 1 else None
    if found is None:
        i, j = np.triu_indices(len(x1), 1)
        return i.astype(np.int64), j.astype(np.int64)
    order, first, second = found
    return order[first], order[second]


def pair_iou(boxes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """IoU of boxes[i] and boxes[j] with the originals' +1 pixel convention, in float32."""
    x1, y1, x2, y2 = _columns(boxes)
    i, j = np.asarray(i, np.intp), np.asarray(j, np.intp)
    return paired_iou_pixel(x1, y1, x2, y2, (x2 - x1 + 1) * (y2 - y1 + 1), i, j)


def _resolve(n: int, better: np.ndarray, worse: np.ndarray) -> np.ndarray:
    """Greedy outcome over the suppression graph (nodes are ranks, edges better -> worse): kept mask.

    A box is suppressed as soon as one better neighbour is kept, and kept once all its better
    neighbours are suppressed. Each round settles every box whose better neighbours are settled; the
    rounds needed equal the longest chain of alternating decisions, a handful on real detections.
    """
    state = np.zeros(n, np.int8)  # by rank: 0 open, 1 kept, -1 suppressed
    while len(better):
        state[worse[state[better] == 1]] = -1
        # Only edges between two open boxes can still decide anything.
        live = (state[better] == 0) & (state[worse] == 0)
        better, worse = better[live], worse[live]
        blocked = np.zeros(n, bool)
        blocked[worse] = True
        state[(state == 0) & ~blocked] = 1
    return state >= 0


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Exact greedy NMS: indices of kept boxes, by descending score.

    The classic loop's result (take the best box, drop every remaining box with IoU > threshold,
    repeat; ties broken by index; IoU in float32 with the +1 pixel convention) bit for bit, in
    O(n log n + candidate pairs) whole-array steps instead of a Python loop over kept boxes.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), -np.asarray(scores)))  # descending score, ties by index
    x1, y1, x2, y2 = _columns(boxes)
    found = _candidate_pairs(x1, y1, x2, y2, threshold) if n > 1 else None
    if found is None:
        return order if n == 1 else _greedy_loop(x1, y1, x2, y2, order, threshold)
    pos_order, first, second = found
    # Work in the pairs' own order: no index translation per pair, and nearby gathers.
    x1, y1, x2, y2 = x1[pos_order], y1[pos_order], x2[pos_order], y2[pos_order]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    hit = np.flatnonzero(paired_iou_pixel(x1, y1, x2, y2, areas, first, second) > threshold)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    rank = rank[pos_order]
    a, b = rank[first[hit]], rank[second[hit]]
    return order[_resolve(n, np.minimum(a, b), np.maximum(a, b))]


def vote_landmarks(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, keep: np.ndarray,
                   threshold: float, voters: float) -> np.ndarray:
    """Landmarks of the kept candidates ``keep``: each the score-weighted mean of the landmarks of every
    candidate scoring > ``voters`` whose box overlaps its box by IoU > ``threshold`` (float32, +1 pixel
    convention, as NMS), its own included.

    Why: NMS keeps one prior's regression and throws away its neighbours', which saw the same face from
    slightly shifted anchors; their mean is the better estimate (MTFL landmark error 3-6 % lower for every
    model here, docs/MODELS.md). Boxes and scores are left as NMS kept them, so detection AP is unchanged.
    Only the few confident candidates vote, so every kept box against every voter is cheap.
    """
    out = points[keep].astype(np.float64) * scores[keep, None, None]
    total = scores[keep].astype(np.float64)
    voter = np.flatnonzero(scores > voters)
    if len(keep) and len(voter):
        k, v = np.repeat(keep, len(voter)), np.tile(voter, len(keep))
        hit = (pair_iou(boxes, k, v) > threshold) & (k != v)  # a kept box's own vote is already in
        weight = np.where(hit, scores[v], 0).reshape(len(keep), len(voter)).astype(np.float64)
        out += np.einsum("kv,vpc->kpc", weight, points[voter])
        total += weight.sum(1)
    return (out / np.maximum(total, np.finfo(np.float64).tiny)[:, None, None]).astype(np.float32)


def postprocess(loc: np.ndarray, conf: np.ndarray, landm: np.ndarray, priors: np.ndarray,
                input_size: tuple[int, int], config: PostprocessConfig = PostprocessConfig(),
                variances: tuple[float, float] = (0.1, 0.2)) -> Detections:
    """Raw outputs of one image -> detections in network-input pixels.

    ``loc (P, 4)``, ``conf (P, 2)`` softmax (or ``(P,)`` face scores), ``landm (P, 10)``;
    ``priors (P, 4)`` normalised; ``input_size`` = (width, height) of the network input.
    """
    scores = conf[:, 1] if conf.ndim == 2 else conf
    vote = config.landmark_vote is not None
    # Above conf, the candidates; with the vote, down to its voters too (they take part in NMS, which they
    # cannot change above conf: greedy NMS only lets a better box suppress a worse one).
    voters = defaults.LANDMARK_VOTERS
    floor = min(config.conf, voters) if vote else config.conf
    candidates = np.flatnonzero(scores > floor)
    if len(candidates) == 0 or not np.any(scores[candidates] > config.conf):
        return Detections.empty()
    cand_scores = scores[candidates]
    best = np.argsort(-cand_scores, kind="stable")[: config.top_k]
    candidates, cand_scores = candidates[best], cand_scores[best]
    width, height = input_size
    scale = np.array([width, height, width, height], np.float32)
    p = priors[candidates]
    boxes = decode_boxes(loc[candidates].astype(np.float32), p, variances) * scale
    points = decode_landmarks(landm[candidates].astype(np.float32), p, variances).reshape(-1, 5, 2) * scale[:2]
    keep = nms(boxes, cand_scores, config.nms)
    keep = keep[cand_scores[keep] > config.conf][: config.keep_top_k]
    if vote:
        return Detections(boxes[keep], cand_scores[keep],
                          vote_landmarks(boxes, cand_scores, points, keep, config.landmark_vote, voters))
    return Detections(boxes[keep], cand_scores[keep], points[keep])
