"""Every Pixel Classification fixture project run headless on its own training image: the output's shape,
dtype and range are right, and on the pixels the project has labels for the argmax agrees with the label."""

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_ilastik.cli import main
from hpc_ilastik.project.reader import open_project
from tests.conftest import FIXTURES, label_agreement, training_image

AGREEMENT = 0.8  # the large majority of labelled pixels must get their label's class


def _file_of(spec: str) -> Path:
    """The file on disk behind an input spec (an HDF5 spec's inner path stripped)."""
    return Path(re.split(r"(?<=\.h5)/|(?<=\.ilp)/", spec, maxsplit=1)[0])


def _stored_shape(spec: str) -> tuple[int, ...]:
    """The shape of an HDF5 input (projects older than ilastik 1.3 do not record it)."""
    file, inner = re.split(r"(?<=\.h5)/", spec, maxsplit=1)
    with h5py.File(file, "r") as f:
        return f[inner].shape


def _tzyx_shape(axes: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The (t, z, y, x) extent of an image with these axes (absent axes have extent 1)."""
    extent = dict(zip(axes, shape))
    return tuple(extent.get(axis, 1) for axis in "tzyx")


# collected at import: the top-level PixelClassification*.ilp whose training image is (not) on disk
TOP_LEVEL = {p.name: training_image(p) for p in sorted(FIXTURES.glob("PixelClassification*.ilp"))}
PRESENT = sorted(name for name, spec in TOP_LEVEL.items() if _file_of(spec).exists())
MISSING = sorted(name for name, spec in TOP_LEVEL.items() if not _file_of(spec).exists())

# `PixelClassification2d_units.ilp` names `inputdata/2d.tif`, which the fixtures lack; the same 16x16
# image (y 6 nm, x 5 cm per pixel, as the project's axistags and axis_units record) is there as
# `inputdata/2d_with_pixel_sizes.tif`, so the project also runs on that file, as a user would pass it.
RENAMED = {"PixelClassification2d_units.ilp": FIXTURES / "inputdata" / "2d_with_pixel_sizes.tif"}

# project (relative to the fixtures) → the input a user passes; notebooks/pc.ilp keeps its image inside
# the project, which ilastik reads as an HDF5 path into the .ilp
RUNS = {name: TOP_LEVEL[name] for name in PRESENT} | {name: str(path) for name, path in RENAMED.items()}
RUNS["notebooks/pc.ilp"] = training_image(FIXTURES / "notebooks" / "pc.ilp")


def test_the_expected_fixture_projects_are_found(fixtures_dir):
    assert PRESENT == [f"PixelClassification{kind}.ilp" for kind in
                       ("2d", "2d3c", "3d", "3d1c", "3d2c", "5t2d1c", "5t2d2c", "5t3d2c")]
    assert MISSING == ["PixelClassification2d_units.ilp"]
    stored = open_project(str(FIXTURES / MISSING[0])).lanes[0].roles["Raw Data"]
    assert stored.shape == (16, 16) and stored.axes == "yx"


@pytest.mark.parametrize("name", MISSING)
def test_a_missing_training_image_is_a_clear_error(name, tmp_path, capsys):
    missing = TOP_LEVEL[name]
    code = main(["--headless", f"--project={FIXTURES / name}", f"--output_filename_format={tmp_path}/out.h5", missing])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hpc-ilastik: error:") and missing in err and "not found" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", list(RUNS))
def test_project_predicts_its_own_labels(name, headless, record_property):
    project = open_project(str(FIXTURES / name))
    stage = project.stages[0]
    probs = headless(FIXTURES / name, [RUNS[name]], "--output_axis_order=tzyxc")
    ref = project.lanes[0].roles["Raw Data"]
    n_classes = len(stage.label_names)
    assert probs.dtype == np.float32 and probs.ndim == 5 and probs.shape[4] == n_classes
    assert probs.shape[:4] == _tzyx_shape(ref.axes, ref.shape or _stored_shape(RUNS[name]))
    assert probs.min() >= 0 and probs.max() <= 1
    np.testing.assert_allclose(probs.sum(axis=-1), 1, atol=1e-5)

    agree, total = label_agreement(probs, stage)
    assert total > 0
    record_property("figures", f"{name}: output {probs.shape} (tzyxc), argmax = label on {agree} of {total} "
                               f"labelled pixels ({100 * agree / total:.1f} %)")
    assert agree >= AGREEMENT * total
