"""The segments to score and the region to score them in, on the saliency map's grid.

:func:`mask_source` puts the segments on the map's grid (:class:`MaskSource`: bool masks by name, or
labelmap layers split by label in one pass, never one full-size volume per segment);
:func:`choose_region` picks the evaluation region V (the body, the whole field of view, a segment or
a given mask); :func:`body_mask` finds the body in a CT.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import InputError
from ..io.volume import Volume, overlap_fraction, resample_to

BODY_HU = -500.0


class MaskSource:
    """The segments to score, on the map's grid: bool masks by name, or labelmap layers.

    :meth:`tie_groups` yields, per segment, the tie groups of its voxels inside the region. For
    labelmap layers (:class:`Segments`, e.g. 117 TotalSegmentator labels in one uint8 volume) the
    region's voxels are split by label in one pass (:func:`split_by_label`) and each label's voxels
    gather their tie-group ids from the shared ranking — never one full-size boolean volume per
    segment; the map is sorted only once.
    """

    def __init__(self, masks: dict | None = None, segments=None):
        self._masks, self._segments = masks, segments
        self.names = list(masks) if masks is not None else segments.names

    def mask(self, name: str) -> np.ndarray:
        """The full-grid bool mask of one segment (made on demand from a labelmap layer)."""
        return self._masks[name] if self._masks is not None else self._segments.mask(name)

    def tie_groups(self, ranking, in_region, skip=None):
        """(name, tie-group ids of its voxels in the region, its voxel count, crop -> bool box)."""
        def gather(selected_in_grid_order):
            return ranking.group_of[selected_in_grid_order]

        if self._masks is not None:
            for name, mask in self._masks.items():
                if name == skip:
                    continue
                flat = mask.ravel()
                selected = flat[in_region] if in_region is not None else flat
                yield name, gather(selected), int(np.count_nonzero(flat)), (lambda crop, m=mask: m[crop])
            return
        by_layer = {}
        for entry in self._segments.entries:
            by_layer.setdefault(entry.layer, []).append(entry)
        layers = self._segments.layers
        for index, entries in by_layer.items():
            layer = layers[index]
            flat = layer.ravel()
            labels = flat[in_region] if in_region is not None else flat
            small = flat.dtype.itemsize <= 2 and np.issubdtype(flat.dtype, np.unsignedinteger)
            totals = label_counts(flat, max(e.label for e in entries) + 1) if small else None
            wanted = [e.label for e in entries if e.name != skip]
            split = split_by_label(labels, ranking.group_of, wanted) if small else None
            del labels
            for e in entries:
                if e.name == skip:
                    continue
                total = int(totals[e.label]) if totals is not None else int(np.count_nonzero(flat == e.label))
                if split is not None:
                    groups = split[e.label]
                else:
                    region_labels = flat[in_region] if in_region is not None else flat
                    groups = gather(region_labels == e.label)
                yield e.name, groups, total, (lambda crop, lay=layer, label=e.label: lay[crop] == label)


def label_counts(flat: np.ndarray, minlength: int, chunk: int = 1 << 23) -> np.ndarray:
    """np.bincount of small-integer labels in chunks (bincount casts its input to int64: on a whole
    512x512x400 layer that is a 0.8 GB temporary)."""
    counts = np.zeros(max(minlength, int(flat.max()) + 1 if flat.size else 0), dtype=np.int64)
    for start in range(0, flat.size, chunk):
        part = np.bincount(flat[start:start + chunk])
        counts[:part.size] += part
    return counts


def split_by_label(labels: np.ndarray, group_of: np.ndarray, wanted, chunk: int = 1 << 21) -> dict:
    """label -> int32 tie-group ids of the region voxels carrying it, for every ``wanted`` label.

    One pass over the region in chunks: a stable counting sort of the chunk's small-integer labels
    (numpy's radix sort for 8/16-bit keys: linear time), one gather of the chunk's tie groups in
    that order, cut at the label boundaries. So 117 labels cost about one pass, not 117 (measured
    in benchmarks/bench_fullsize.py); memory: the chunk's index array plus the labels' own voxels.
    """
    wanted = np.asarray(sorted(set(int(v) for v in wanted)), dtype=np.int64)
    parts = {int(v): [] for v in wanted}
    for start in range(0, labels.size, chunk):
        chunk_labels = labels[start:start + chunk]
        order = np.argsort(chunk_labels, kind="stable")
        sorted_labels = chunk_labels[order]
        groups = group_of[start:start + chunk][order]
        del order
        lo = np.searchsorted(sorted_labels, wanted, side="left")
        hi = np.searchsorted(sorted_labels, wanted, side="right")
        for label, a, b in zip(wanted.tolist(), lo, hi):
            if b > a:
                parts[label].append(groups[a:b].copy())
    empty = np.zeros(0, dtype=group_of.dtype)
    # popped as they are joined: the pieces and the joined arrays never both exist for every label
    return {label: (np.concatenate(p) if p else empty) for label, p in
            ((label, parts.pop(label)) for label in list(parts))}


def mask_source(segments, saliency: Volume, note) -> MaskSource:
    """The segments on ``saliency``'s grid: ``segments`` is :class:`~saliency_inspector.io.segments.Segments`
    (resampled, nearest neighbour, when it lives on another grid; ``note(message)`` is told) or a dict
    name -> bool array already on that grid. InputError when there is nothing to score against."""
    if isinstance(segments, Mapping):
        masks = {str(k): np.asarray(v, dtype=bool) for k, v in segments.items()}
        for name, m in masks.items():
            if m.shape != saliency.shape:
                raise InputError(f"mask {name!r} has shape {m.shape}, the map {saliency.shape}; "
                                 "put them on one grid (or pass Segments, which are resampled)")
        source = MaskSource(masks=masks)
    else:
        grid = segments.grid
        if not grid.same_grid(saliency):
            if overlap_fraction(grid, saliency) == 0.0:
                raise InputError(f"the masks ({grid.describe_grid()}) do not overlap the saliency map "
                                 f"({saliency.describe_grid()}); check that they belong to the same CT")
            note(f"masks are on another grid ({grid.describe_grid()}); resampled onto the map's grid "
                 "(nearest neighbour)")
            segments = segments.resampled_to(saliency)
        source = MaskSource(segments=segments)
    if not source.names:
        raise InputError("there are no segments to score the map against; give a segmentation with at least one segment")
    if isinstance(segments, Mapping):
        empty = not any(np.any(mk) for mk in source._masks.values())
    else:
        empty = not any(np.any(layer) for layer in segments.layers)
    if empty:
        raise InputError(f"every segment ({', '.join(source.names)}) is empty on the map's grid, so there is "
                         "nothing to score against; give masks that hold the organs of this CT")
    return source


def choose_region(region, masks: MaskSource, saliency: Volume, ct, note) -> tuple:
    """The evaluation region V: (bool mask, description, name of the segment used or None); the mask
    is None for "all". ``region``: "auto", "body", "all", a segment name of ``masks``, a bool array or
    a (description, bool array) pair (see :func:`.evaluation.evaluate`); ``ct`` gives the body when no
    segment is named body."""
    if isinstance(region, tuple) and len(region) == 2:  # (description, mask), e.g. from --region-masks
        name, mask = region
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != saliency.shape:
            raise InputError(f"region mask shape {mask.shape} differs from the map's {saliency.shape}")
        segment = None
    elif isinstance(region, np.ndarray):
        if region.shape != saliency.shape:
            raise InputError(f"region mask shape {region.shape} differs from the map's {saliency.shape}")
        mask, name, segment = region.astype(bool), "custom region", None
    else:
        key = str(region).strip()
        body_segment = next((n for n in masks.names if n.lower() == "body"), None)
        if key.lower() == "auto":
            key = "body" if body_segment or ct is not None else "all"
        if key.lower() == "all":
            return None, "all", None
        if key.lower() == "body":
            if body_segment:
                mask, name, segment = masks.mask(body_segment), f"body (segment {body_segment!r})", body_segment
            elif ct is not None:
                mask, name, segment = body_mask(ct, saliency), f"body (CT > {BODY_HU:g} HU)", None
            else:
                raise InputError("region 'body' needs the CT (--ct CT) or a segment named body; "
                                 "or use --region all")
        elif key in masks.names:
            mask, name, segment = masks.mask(key), key, key
        else:
            raise InputError(f"region {key!r} is not body, all or a segment name; the segments are: "
                             f"{', '.join(masks.names)}")
    if not mask.any():
        raise InputError(f"the evaluation region ({name}) is empty; choose another --region (e.g. all)")
    return mask, name, segment


def body_mask(ct: Volume, reference: Volume | None = None) -> np.ndarray:
    """The body: CT > -500 HU, largest connected component, holes filled (in 3D and per axial slice,
    so the lungs are inside). On ``reference``'s grid when given (CT resampled linearly)."""
    from scipy import ndimage

    if reference is not None and not ct.same_grid(reference):
        if overlap_fraction(ct, reference) == 0.0:
            raise InputError(f"the CT ({ct.describe_grid()}) does not overlap the saliency map "
                             f"({reference.describe_grid()}); give the CT the map was computed on")
        ct = resample_to(ct.with_array(ct.array.astype(np.float32)), reference, "linear", default_value=-1024.0)
    tissue = ct.array > BODY_HU
    planes = [np.flatnonzero(tissue.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1))]
    if planes[0].size == 0:
        raise InputError(f"the CT has no voxel above {BODY_HU:g} HU, so there is no body; is it in HU? "
                         "use --region all")
    # Everything is done inside the tissue's bounding box: outside it there is no component, and every
    # background voxel outside it reaches the array's edge, so hole filling in the box (whose edge
    # counts as outside) gives the same voxels as on the whole array, in 3D and per slice.
    box = tuple(slice(int(p[0]), int(p[-1]) + 1) for p in planes)
    labels, count = _label_components(tissue[box])
    del tissue
    body = labels == int(np.argmax(_component_sizes(labels, count)))
    del labels
    body = ndimage.binary_fill_holes(body)
    for k in range(body.shape[0]):  # axial slices: lungs and bowel gas open to the airway still count
        body[k] = ndimage.binary_fill_holes(body[k])
    whole = np.zeros(ct.shape, dtype=bool)
    whole[box] = body
    return whole


def _label_components(mask: np.ndarray) -> tuple:
    """``ndimage.label`` (6-connectivity) into uint16 labels where the count allows: half the memory of
    its default int32 on a full-size CT. scipy raises RuntimeError when uint16 cannot hold the labels
    (scipy/ndimage/_measurements.py, ``label``: NeedMoreBits → int32 attempt → "insufficient
    bit-depth"); then the labelling is redone in int32 (a noisy CT with > 65535 specks)."""
    from scipy import ndimage

    try:
        return ndimage.label(mask, output=np.uint16)
    except RuntimeError:
        return ndimage.label(mask)


def _component_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    """Voxels per label (background's count set to 0), counted slab by slab: ``np.bincount`` copies
    its input to int64 (8 bytes a voxel: 800 MB on a 512×512×400 CT), so it only sees one slab."""
    sizes = np.zeros(count + 1, dtype=np.int64)
    step = max(1, (1 << 22) // max(1, labels[0].size))  # about 4 M voxels (32 MB of int64) a slab
    for k in range(0, labels.shape[0], step):
        sizes += np.bincount(labels[k:k + step].ravel(), minlength=count + 1)
    sizes[0] = 0
    return sizes
