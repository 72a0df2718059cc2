"""Two faults the re-run hostile list (benchmarks/hostile_runs.py) still found: a NaN reader heatmap
as fixations (a ValueError traceback) and a signed map's complexity (NaN, a RuntimeWarning on the
terminal of `compare`)."""

import warnings

import numpy as np
import pytest

from saliency_inspector.errors import InputError
from saliency_inspector.io.volume import Volume
from saliency_inspector.scoring import complexity
from saliency_inspector.scoring.gaze import compare_with_gaze
from saliency_inspector.scoring.ranking import Ranking


def test_a_nan_reader_heatmap_is_one_input_error():
    saliency = Volume(np.random.default_rng(0).random((12, 12, 12)).astype(np.float32), (4.0, 4.0, 4.0))
    heat = saliency.with_array(np.full((12, 12, 12), np.nan, np.float32))
    with pytest.raises(InputError, match="1728 NaN or infinite voxels"):
        compare_with_gaze(saliency, heat)


def test_complexity_of_a_signed_map_is_that_of_its_positive_part_without_a_warning():
    signed = np.random.default_rng(1).normal(size=4000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old code warned "invalid value encountered in log"
        got = complexity.from_ranking(Ranking(signed))
    expected = complexity.from_ranking(Ranking(np.maximum(signed, 0)))
    assert np.isfinite(got["complexity"]) and np.isfinite(got["sparseness"])
    assert got["complexity"] == pytest.approx(expected["complexity"], rel=1e-12)
    assert got["sparseness"] == pytest.approx(expected["sparseness"], rel=1e-12)
