"""Exact ROC AUC and average precision for many masks, sharing one sort of the scores.

scikit-learn sorts the scores again for every mask (and again for AUPRC). Here the scores of the
evaluation region are ranked once (:class:`Ranking`: descending distinct values, the tie group of
every voxel); each mask then needs only the tie groups of its own voxels, sorted and counted. From
those counts follow, exactly:

* ROC AUC with average ranks for ties (the Mann-Whitney statistic, integer arithmetic until the
  final division), equal to ``sklearn.metrics.roc_auc_score``;
* average precision exactly as ``sklearn.metrics.average_precision_score`` defines it (step-wise,
  one step per tie group, no interpolation);
* counts above any threshold, top-k hits with ties shared fairly, the best Dice over thresholds;
* the full ROC and precision-recall curves in scikit-learn's conventions (for plots).

We rewrite this instead of calling scikit-learn because sharing the sort is what makes it fast
(measured in ``benchmarks/bench_metrics.py``). Integer-valued scores (quantised maps, e.g. uint8/
uint16 files) are ranked by histogram counting, without any sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Integer scores spanning at most this many values are ranked by counting, not sorting.
_MAX_HISTOGRAM_RANGE = 1 << 24
# With device "auto", the GPU is tried for score vectors of at least this size when torch is already
# imported (a model ran in this process), and from _MIN_IMPORT_TORCH_SCORES on otherwise: below that,
# importing torch (seconds) just to look for a GPU costs more than numpy's sort.
_MIN_GPU_SCORES = 1 << 20
_MIN_IMPORT_TORCH_SCORES = 1 << 24


@dataclass(frozen=True)
class MaskCounts:
    """The positives of one mask as seen by a :class:`Ranking`.

    ``groups`` are the tie-group ids (ascending = descending score) that hold at least one positive,
    ``counts`` the number of positives in each, ``positives`` their total.
    """

    groups: np.ndarray  # int64 (J,)
    counts: np.ndarray  # int64 (J,)

    @property
    def positives(self) -> int:
        return int(self.counts.sum())


class Ranking:
    """Dense descending ranks of a 1D score vector, computed once and shared by every mask.

    Attributes: ``n`` (number of scores), ``values`` (distinct scores, descending), ``sizes`` (voxels
    per tie group), ``ends`` (exclusive end position of each group in descending order, i.e. the
    number of voxels with a score >= that group's value), ``group_of`` (int32 tie-group id of every
    score, in the input's order).
    """

    def __init__(self, scores, device: str = "auto", relu: bool = False):
        scores = np.asarray(scores).ravel()
        if scores.size == 0:
            raise ValueError("cannot rank an empty score vector")
        self.n = int(scores.size)
        if relu and scores.dtype == np.float32 and self.n < (1 << 32) and (
                device in ("cpu", "numpy") or (device == "auto" and not self._gpu_worth_it())):
            # ranks of ReLU(scores) without a ReLU'd copy, an argsort or an int64 order (see _packed)
            # per group only its value and end (int32 below 2³¹ voxels): a voxel-wise map has a group
            # per voxel, so the sizes are computed from the ends where needed instead of stored
            self.values, self.ends, self.group_of = _dense_ranks_packed(scores)
            self._sizes = None
            return
        if relu and scores.dtype != bool:
            scores = np.maximum(scores, 0)
        if np.issubdtype(scores.dtype, np.integer) or scores.dtype == bool:
            span = int(scores.max()) - int(scores.min()) + 1
            if span <= _MAX_HISTOGRAM_RANGE:
                self.values, self.sizes, self.group_of = _dense_ranks_by_counting(scores)
                self.ends = np.cumsum(self.sizes)
                return
        on_gpu = _resolve_device(device) == "cuda" if device != "auto" or self._gpu_worth_it() else False
        dense_ranks = (lambda x: _dense_ranks_torch(x, "cuda")) if on_gpu else _dense_ranks_numpy
        # A ReLU'd map has a large tie at its minimum (0): only the rest needs sorting, the tie is
        # the last group. Exact, and about halves the sort for a typical CAM.
        lowest = scores.min()
        at_lowest = scores == lowest
        count_lowest = int(np.count_nonzero(at_lowest))
        if count_lowest == self.n or count_lowest * 20 < self.n:
            del at_lowest
            self.values, self.sizes, self.group_of = dense_ranks(scores)
        else:
            np.logical_not(at_lowest, out=at_lowest)  # now: the voxels above the lowest score
            values, sizes, group_rest = dense_ranks(scores[at_lowest])
            self.values = np.append(values, lowest).astype(values.dtype)
            self.sizes = np.append(sizes, count_lowest)
            self.group_of = np.full(self.n, values.size, dtype=np.int32)
            self.group_of[at_lowest] = group_rest  # boolean scatter: no int64 index array
            del at_lowest, group_rest
        self.ends = np.cumsum(self.sizes)

    def _gpu_worth_it(self) -> bool:
        import sys

        threshold = _MIN_GPU_SCORES if "torch" in sys.modules else _MIN_IMPORT_TORCH_SCORES
        return self.n >= threshold

    @property
    def sizes(self) -> np.ndarray:
        """Voxels per tie group (int64; computed from ``ends`` when not stored)."""
        stored = self.__dict__.get("_sizes")
        return stored if stored is not None else np.diff(self.ends, prepend=0).astype(np.int64)

    @sizes.setter
    def sizes(self, value):
        self._sizes = value

    def _sizes_of(self, groups) -> np.ndarray:
        """Sizes of the tie groups ``groups`` (int64), without the full array."""
        groups = np.asarray(groups)
        ends = self.ends[groups].astype(np.int64)
        before = np.where(groups > 0, self.ends[np.maximum(groups - 1, 0)], 0).astype(np.int64)
        return ends - before

    @property
    def n_groups(self) -> int:
        return int(self.values.size)

    # ---- per mask ----------------------------------------------------------------------------
    def counts_for(self, positions) -> MaskCounts:
        """Counts of the positives at ``positions`` (indices into the score vector) per tie group."""
        groups = self.group_of[np.asarray(positions)]
        return self.counts_from_groups(groups)

    def counts_from_groups(self, groups) -> MaskCounts:
        """Counts per tie group from the tie-group ids of the positives."""
        groups = np.asarray(groups)
        if groups.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return MaskCounts(empty, empty)
        if groups.size * 8 >= self.n_groups and self.n_groups <= _MAX_HISTOGRAM_RANGE:
            # many positives: counting into every group is cheaper than sorting the positives (a
            # histogram of at most 16M int64 bins, so 117 labels never each allocate a CT-sized one)
            hist = np.bincount(groups, minlength=self.n_groups)
            present = np.flatnonzero(hist)
            return MaskCounts(present.astype(np.int64), hist[present].astype(np.int64))
        ids, counts = np.unique(groups, return_counts=True)
        return MaskCounts(ids.astype(np.int64), counts.astype(np.int64))

    def roc_auc(self, mc: MaskCounts) -> float:
        """Exact ROC AUC, ties at average rank; NaN when there are no positives or no negatives."""
        positives = mc.positives
        negatives = self.n - positives
        if positives == 0 or negatives == 0:
            return float("nan")
        tps = np.cumsum(mc.counts)
        fps = self.ends[mc.groups] - tps  # negatives scored >= this group's value
        sizes = self._sizes_of(mc.groups)
        # each positive beats the negatives strictly below its group and half of those tied with it;
        # doubled so that everything stays an exact integer until the one division
        twice = int(np.sum(mc.counts * (2 * (negatives - fps) + (sizes - mc.counts))))
        return twice / (2.0 * positives * negatives)

    def average_precision(self, mc: MaskCounts) -> float:
        """Average precision as scikit-learn defines it: Σ (R_i − R_{i−1}) P_i over tie groups."""
        positives = mc.positives
        if positives == 0:
            return float("nan")
        tps = np.cumsum(mc.counts)
        precision = tps / self.ends[mc.groups]
        return float(np.sum(mc.counts * precision) / positives)

    def kept_groups(self, threshold: float) -> int:
        """Number of tie groups (from the top) whose score is strictly above ``threshold``."""
        return int(np.searchsorted(-self.values, -threshold, side="left"))

    def hits_in_top_groups(self, mc: MaskCounts, groups: int) -> int:
        """Positives among the voxels of the first ``groups`` tie groups."""
        return int(mc.counts[: np.searchsorted(mc.groups, groups, side="left")].sum())

    def voxels_in_top_groups(self, groups: int) -> int:
        """Voxels in the first ``groups`` tie groups."""
        return int(self.ends[groups - 1]) if groups > 0 else 0

    def top_k_hits(self, mc: MaskCounts, k: int) -> tuple:
        """Expected positives among the ``k`` highest scores and the k-th highest score.

        When the k-th place falls inside a tie group, the group's remaining places are filled as by
        a uniformly random tie-break: they count the group's share of positives (so the answer is
        deterministic and no voxel order is favoured).
        """
        k = int(k)
        if k <= 0:
            return 0.0, float("nan")
        g = int(np.searchsorted(self.ends, k, side="left"))  # group holding the k-th place
        above = self.hits_in_top_groups(mc, g)
        start = self.voxels_in_top_groups(g)
        j = np.searchsorted(mc.groups, g)
        in_group = int(mc.counts[j]) if j < mc.groups.size and mc.groups[j] == g else 0
        share = (k - start) * in_group / float(self._sizes_of([g])[0])
        return above + share, float(self.values[g])

    def best_dice(self, mc: MaskCounts) -> tuple:
        """Largest Dice over all thresholds (an oracle): (dice, kept voxels, hits, lowest kept score).

        Between two groups holding positives the hits stay and the kept voxels grow, so the best
        cut is at the end of a group that holds positives: only those are tried.
        """
        positives = mc.positives
        if positives == 0:
            return float("nan"), 0, 0, float("nan")
        tps = np.cumsum(mc.counts)
        kept = self.ends[mc.groups]
        dice = 2.0 * tps / (kept + positives)
        best = int(np.argmax(dice))
        return float(dice[best]), int(kept[best]), int(tps[best]), float(self.values[mc.groups[best]])

    # ---- curves (scikit-learn's conventions, for plots) -----------------------------------------
    def _cumulative(self, mc: MaskCounts):
        hist = np.zeros(self.n_groups, dtype=np.int64)
        hist[mc.groups] = mc.counts
        tps = np.cumsum(hist)
        return tps, self.ends - tps

    def roc_curve(self, mc: MaskCounts):
        """(fpr, tpr, thresholds) like ``sklearn.metrics.roc_curve(drop_intermediate=False)``."""
        tps, fps = self._cumulative(mc)
        tps = np.concatenate([[0], tps])
        fps = np.concatenate([[0], fps])
        thresholds = np.concatenate([[np.inf], self.values.astype(np.float64)])
        with np.errstate(invalid="ignore", divide="ignore"):
            return fps / fps[-1], tps / tps[-1], thresholds

    def pr_curve(self, mc: MaskCounts):
        """(precision, recall, thresholds) like ``sklearn.metrics.precision_recall_curve``."""
        tps, fps = self._cumulative(mc)
        precision = tps / (tps + fps)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tps / tps[-1]
        return (np.concatenate([precision[::-1], [1.0]]), np.concatenate([recall[::-1], [0.0]]),
                self.values[::-1].astype(np.float64))


# ---- dense ranks ------------------------------------------------------------------------------
def _resolve_device(device: str) -> str:
    if device in ("cpu", "numpy"):
        return "cpu"
    if device in ("auto", "cuda"):
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return "cpu"
        if torch.cuda.is_available():
            return "cuda"
        if device == "cuda":
            from ..errors import InputError
            raise InputError("device 'cuda' was asked for but no CUDA GPU is available; use --device auto or cpu")
        return "cpu"
    raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")


def _dense_ranks_numpy(scores: np.ndarray, chunk: int = 1 << 22):
    """(values desc, sizes, group_of int32) by one argsort of the scores.

    Memory-lean (a full-size map's region has ~60 M scores): ascending argsort read backwards (no
    negated copy), and the tie-group ids scattered chunk by chunk from the boundary flags (no
    full-length array of sorted group ids): peak about the scores + the int64 order + one int32
    and one float copy, instead of two more.
    """
    order = np.argsort(scores)  # ascending; ties in any order: they are grouped below
    ranked = scores[order]
    n = scores.size
    # boundaries in DESCENDING order: position p (descending) is ascending position n-1-p
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(ranked[:-1][::-1], ranked[1:][::-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    values = ranked[::-1][starts].copy()
    del ranked
    sizes = np.diff(np.append(starts, n))
    group_of = np.empty(n, dtype=np.int32)
    _number_groups(group_of, order[::-1], new_group, n, chunk)
    return values, sizes.astype(np.int64), group_of


def _dense_ranks_packed(scores: np.ndarray, chunk: int = 1 << 22):
    """(values desc, ends, group_of int32) of ReLU(``scores``) (float32, fewer than 2³² of them);
    ``ends`` (exclusive end of each tie group in descending order) is int32 below 2³¹ voxels.

    The voxels at 0 after the ReLU (half of a signed gradient map) form the last tie group and are
    not sorted. Every other voxel becomes one uint64 key, its float bits above its index (a
    non-negative float's bits order like the float), and the keys are sorted in place: one 8-byte
    array instead of a ReLU'd copy, an argsort's int64 order and a sorted copy, and numpy sorts plain
    integers several times faster than it argsorts floats. Ties are equal high halves.
    """
    n = scores.size
    positive = np.count_nonzero(scores > 0)
    keys = np.empty(positive, dtype=np.uint64)
    filled = 0
    for a in range(0, n, chunk):
        part = scores[a:a + chunk]
        where = np.flatnonzero(part > 0)
        bits = part[where].view(np.uint32).astype(np.uint64)
        bits <<= np.uint64(32)
        bits |= (where + a).astype(np.uint64)
        keys[filled:filled + bits.size] = bits
        filled += bits.size
    keys.sort()
    halves = keys.view(np.uint32).reshape(-1, 2)[::-1]  # descending (a view)
    index, high = halves[:, 0], halves[:, 1]  # little-endian: low half first (checked at import)
    new_group = np.empty(positive, dtype=bool)
    if positive:
        new_group[0] = True
        np.not_equal(high[1:], high[:-1], out=new_group[1:])
    groups = int(np.count_nonzero(new_group))
    zeros = 1 if positive < n else 0  # the zeros: the last group (also when no voxel is above 0)
    index_type = np.int32 if n < (1 << 31) else np.int64
    values = np.empty(groups + zeros, dtype=np.float32)
    ends = np.empty(groups + zeros, dtype=index_type)
    done = 0
    for a in range(0, positive, chunk):  # group starts chunk by chunk: no int64 array per group
        starts = np.flatnonzero(new_group[a:a + chunk]) + a
        values[done:done + starts.size] = high[starts].view(np.float32)
        if done:
            ends[done - 1] = starts[0]
        ends[done:done + starts.size - 1] = starts[1:]
        done += starts.size
    if groups:
        ends[groups - 1] = positive
    if zeros:
        values[-1] = 0
        ends[-1] = n
    group_of = np.full(n, groups, dtype=np.int32)
    _number_groups(group_of, index, new_group, positive, chunk)
    return values, ends, group_of


def _number_groups(group_of: np.ndarray, index: np.ndarray, new_group: np.ndarray, count: int, chunk: int) -> None:
    """group_of[index[i]] = (tie group of rank i) for the first ``count`` ranks, in chunks: the group
    number is the running count of ``new_group`` (True where a rank starts a new group), less one."""
    offset = -1
    for a in range(0, count, chunk):
        ids = np.cumsum(new_group[a:a + chunk], dtype=np.int32)
        ids += offset
        group_of[index[a:a + chunk]] = ids
        offset = int(ids[-1])


assert np.little_endian, "_dense_ranks_packed reads the low half of a uint64 first"


def _dense_ranks_torch(scores: np.ndarray, device: str):
    """Same as :func:`_dense_ranks_numpy`, with the sort on a torch device (the GPU when present)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(scores)).to(device)
    ranked, order = torch.sort(t, descending=True)
    del t
    new_group = torch.ones(ranked.numel(), dtype=torch.bool, device=device)
    new_group[1:] = ranked[1:] != ranked[:-1]
    starts = torch.nonzero(new_group).flatten()
    values = ranked[starts].cpu().numpy()
    del ranked
    sizes = torch.diff(starts, append=torch.tensor([scores.size], device=device)).cpu().numpy()
    group_sorted = torch.cumsum(new_group, 0, dtype=torch.int32) - 1
    group_of = torch.empty_like(group_sorted)
    group_of[order] = group_sorted
    return values, sizes.astype(np.int64), group_of.cpu().numpy()


def _dense_ranks_by_counting(scores: np.ndarray):
    """Exact dense ranks of integer scores by a histogram (no sort): O(n + value range)."""
    top = scores.max()
    offset = (top.astype(np.int64) - scores.astype(np.int64)) if scores.dtype != bool else (~scores).astype(np.int64)
    hist = np.bincount(offset.ravel())
    present = hist > 0
    dense = np.cumsum(present, dtype=np.int64) - 1
    group_of = dense[offset].astype(np.int32)
    values = (int(top) - np.flatnonzero(present)).astype(scores.dtype if scores.dtype != bool else np.int64)
    return values, hist[present].astype(np.int64), group_of
