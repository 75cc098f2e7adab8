"""Every bad input of the headless command line: a non-zero exit, one clear `hpc-ilastik: error:` line on
stderr naming what is wrong, no traceback (unless --debug), no output left behind, inputs untouched."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest

from hpc_ilastik.cli import main
from tests.conftest import API, FIXTURES

PROJECT = API / "PixelClass.ilp"
PROJECT_3D = API / "PixelClass3D.ilp"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """tmp_path/in holds the inputs (copies and derived files), tmp_path/out is where outputs would go."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (tmp_path / "out").mkdir()
    image = iio.imread(API / "Data_1channel.png")
    iio.imwrite(inputs / "Data_1channel.png", image)
    iio.imwrite(inputs / "rgb.png", np.stack([image, image // 2, 255 - image], axis=-1))
    np.save(inputs / "volume.npy", np.load(API / "Data_3D.npy")[..., 0])
    (inputs / "broken.ilp").write_bytes(PROJECT.read_bytes()[:20000])
    (inputs / "project.h5").write_bytes(PROJECT.read_bytes())  # a project need not be named .ilp
    (inputs / "folder.npy").mkdir()
    (inputs / "regular_file").write_text("not a folder")
    with h5py.File(inputs / "raw.h5", "w") as f:
        f["data"] = image
    (inputs / "corrupt.png").write_bytes((inputs / "Data_1channel.png").read_bytes()[:300])  # cut off mid-file
    return tmp_path


def _hashes(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def _assert_one_clear_error(code: int, err: str, words: list[str]) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("hpc-ilastik: error: "), err
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


def _headless(*options: str) -> list[str]:
    return ["--headless", f"--project={PROJECT}", *options]


IMG = "{in}/Data_1channel.png"
OUT = "--output_filename_format={out}/{{nickname}}_{{result_type}}"

# (case id, argv with {in}/{out}/{fixtures} filled in per test, words the error line must contain)
CASES = [
    ("dashed export option", _headless("--export-source=Probabilities", IMG), ["--export-source", "--export_source"]),
    ("dashed option, separate value", _headless("--output-format", "png", IMG), ["--output-format", "--output_format"]),
    ("dashed filename option", _headless("--output-filename-format={out}/x", IMG), ["--output_filename_format"]),
    ("unknown option", _headless("--frobnicate=3", IMG), ["unknown option --frobnicate"]),
    ("missing project", ["--headless", "--project={in}/nothing.ilp", IMG], ["nothing.ilp", "does not exist"]),
    ("missing input", _headless(OUT, "{in}/nothing.png"), ["nothing.png", "not found"]),
    ("glob matching nothing", _headless(OUT, "{in}/none*.png"), ["none*.png", "no file matches"]),
    ("png as project", ["--headless", "--project={in}/Data_1channel.png", IMG], ["Data_1channel.png", "not an ilastik project"]),
    ("truncated project", ["--headless", "--project={in}/broken.ilp", IMG], ["broken.ilp", "damaged"]),
    ("object classification without its segmentation", ["--headless",
                                                         "--project={fixtures}/ObjectClassification2d_wSeg.ilp", IMG],
     ["--segmentation_image", "every input"]),
    ("counting project on a 1-channel image", ["--headless", "--project={fixtures}/CellDensityCounting2d3c.ilp", OUT,
                                               IMG], ["1 channel(s)", "regressors were trained on 30"]),
    ("tracking project without its second input", ["--headless", "--project={fixtures}/TrackingwLearning5t2d_wPred.ilp",
                                                   OUT, IMG], ["--prediction_maps", "every input"]),
    ("3 channels into a 1-channel project", _headless(OUT, "{in}/rgb.png"), ["3 channel", "trained on 2D images with 1 channel"]),
    ("3D volume into a 2D project", _headless(OUT, "{in}/volume.npy"), ["3D", "trained on 2D", "z=64"]),
    ("2D image into a 3D project", ["--headless", f"--project={PROJECT_3D}", OUT, IMG], ["2D", "trained on 3D"]),
    ("input axes with a bad letter", _headless(OUT, "--input_axes=yq", IMG), ["yq", "unknown letters q"]),
    ("input axes of the wrong length", _headless(OUT, "--input_axes=zyx", IMG), ["zyx", "3 letters", "2 axes"]),
    ("input axes without x", _headless(OUT, "--input_axes=zy", IMG), ["zy", "x and y"]),
    ("too many input axes", _headless(OUT, "--input_axes=yx,yx,yx", IMG), ["3 values", "2 roles"]),
    ("cutout that is no list", _headless(OUT, "--cutout_subregion=hello", IMG), ["hello", "not a list"]),
    ("cutout with unequal tuples", _headless(OUT, "--cutout_subregion=[(0,0,0),(10,10)]", IMG), ["two tuples"]),
    ("cutout with the wrong axis count", _headless(OUT, "--cutout_subregion=[(0,0),(10,10)]", IMG),
     ["2 values", "yxc", "tzyxc"]),
    ("cutout beyond the image", _headless(OUT, "--cutout_subregion=[(0,0,None),(500,None,None)]", IMG),
     ["500", "axis y", "beyond the image"]),
    ("negative cutout", _headless(OUT, "--cutout_subregion=[(-1,0,None),(10,None,None)]", IMG), ["-1", "axis y"]),
    ("empty cutout", _headless(OUT, "--cutout_subregion=[(20,0,None),(10,None,None)]", IMG), ["empty", "axis y"]),
    ("unknown export source", _headless(OUT, "--export_source=Probabilites", IMG),
     ["Probabilites", "Probabilities, Simple Segmentation, Uncertainty, Features, Labels"]),
    ("output under a regular file", _headless("--output_filename_format={in}/regular_file/sub/out", IMG),
     ["regular_file", "cannot create the output directory"]),
    ("output is a folder", _headless("--output_filename_format={in}/folder", "--output_format=numpy", IMG),
     ["folder.npy", "is a folder"]),
    ("output overwrites the input", _headless("--output_filename_format={{dataset_dir}}/{{nickname}}", "--output_format=png",
                                              "--export_source=Simple Segmentation", IMG),
     ["Data_1channel.png", "destroy the input"]),
    ("output into the input's HDF5 file", _headless("--output_filename_format={in}/raw", "{in}/raw.h5/data"),
     ["raw.h5", "destroy the input"]),
    ("output overwrites the project", ["--headless", "--project={in}/project.h5", "--output_format=hdf5",
                                       "--output_filename_format={in}/project", IMG],
     ["project.h5", "destroy the input"]),
    ("png cannot hold float32 probabilities", _headless(OUT, "--output_format=png", IMG),
     ["png", "float32", "--export_dtype"]),
    ("jpg cannot hold float32", _headless(OUT, "--export_dtype=float32", "--export_source=Simple Segmentation",
                                          "--output_format=jpg", IMG), ["jpg", "float32"]),
    ("png cannot hold two channels", _headless(OUT, "--export_dtype=uint8", "--output_format=png", IMG),
     ["png", "2 channel"]),
    ("sequence template without slice index", ["--headless", f"--project={PROJECT_3D}", OUT,
                                               "--output_format=png sequence", "--export_source=Simple Segmentation",
                                               "{in}/volume.npy"], ["{slice_index}"]),
    ("export drange alone", _headless(OUT, "--export_drange=(0,255)", IMG), ["pipeline_result_drange"]),
    ("drange that is no pair", _headless(OUT, "--pipeline_result_drange=(0,1,2)", "--export_drange=(0,255)", IMG),
     ["--pipeline_result_drange", "two numbers"]),
    ("export dtype not offered", _headless(OUT, "--export_dtype=float16", IMG), ["--export_dtype", "float16"]),
    ("unknown output format", _headless(OUT, "--output_format=webp", IMG), ["webp", "unknown output format"]),
    ("dvid output", _headless(OUT, "--output_format=dvid", IMG), ["dvid", "not supported"]),
    ("output axis order with a bad letter", _headless(OUT, "--output_axis_order=yxq", IMG), ["yxq"]),
    ("output axis order dropping an axis", _headless(OUT, "--output_axis_order=xc", IMG), ["'y'", "size 128"]),
    ("readonly that is no boolean", _headless(OUT, "--readonly=maybe", IMG), ["--readonly", "maybe"]),
    ("more masks than inputs", _headless(OUT, IMG, "--prediction_mask", IMG, IMG), ["2", "mask", "1 raw input"]),
    ("no --headless", [f"--project={PROJECT}", IMG], ["--headless"]),
    ("no --project", ["--headless", IMG], ["--project"]),
    ("no inputs", _headless(OUT), ["no input files"]),
    ("corrupt image", _headless(OUT, "{in}/corrupt.png"), ["corrupt.png", "damaged or unreadable"]),
    ("no trees", _headless(OUT, "--tree-count=0", IMG), ["--tree-count", "at least 1, not 0"]),
    ("negative progress interval", _headless(OUT, "--progress_interval=-1", IMG), ["--progress_interval", "-1"]),
]


def _fill(argv: list[str], work: Path) -> list[str]:
    values = {"in": work / "in", "out": work / "out", "fixtures": FIXTURES}
    return [arg.format(**values) for arg in argv]


@pytest.mark.parametrize("argv, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_clear_error(work, capsys, argv, words):
    before = _hashes(work / "in", API)
    code, err = _run(_fill(argv, work), capsys)
    _assert_one_clear_error(code, err, words)
    assert code == 2
    assert list((work / "out").iterdir()) == []
    assert _hashes(work / "in", API) == before
    assert not [p for p in work.rglob("*") if ".tmp-" in p.name or p.name.startswith(".hpc-ilastik")]


def test_distributed_without_mpi4py(work, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `from mpi4py import MPI` now raises ImportError
    code, err = _run(_fill(_headless("--distributed", OUT, "--output_format=n5", IMG), work), capsys)
    _assert_one_clear_error(code, err, ["--distributed", "mpi4py", "pip install"])
    assert list((work / "out").iterdir()) == []


def test_debug_shows_the_traceback(work, capsys):
    code, err = _run(_fill(_headless("--debug", OUT, "{in}/nothing.png"), work), capsys)
    assert code == 2
    assert "Traceback" in err and "UserError" in err
    assert "hpc-ilastik: error: Input file not found" in err


@pytest.mark.parametrize("argv, words", [
    (_headless("--export-source=Probabilities", IMG), ["--export_source"]),
    (["--headless", "--project={fixtures}/TrackingwLearning5t2d_wPred.ilp", IMG], ["--prediction_maps"]),
    (_headless(OUT, "{in}/volume.npy"), ["trained on 2D"]),
], ids=["dashed option", "tracking without its second input", "3D into 2D"])
def test_the_real_command_exits_non_zero_without_traceback(work, argv, words):
    before = _hashes(work / "in")
    result = subprocess.run([sys.executable, "-m", "hpc_ilastik", *_fill(argv, work)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "HPC_ILASTIK_DEBUG": "0"})
    assert result.returncode == 2
    assert result.stdout == ""
    _assert_one_clear_error(result.returncode, result.stderr, words)
    assert _hashes(work / "in") == before


def test_the_real_command_shows_the_traceback_with_debug(work):
    result = subprocess.run([sys.executable, "-m", "hpc_ilastik", *_fill(_headless("--debug", OUT, "{in}/x.png"), work)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "hpc-ilastik: error: Input file not found" in result.stderr


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    from hpc_ilastik.cli import headless_parser

    for action in headless_parser()._actions:
        assert action.help and len(action.help) > 15, action.option_strings
        for option in action.option_strings:
            assert option in text
    for word in ("Simple Segmentation", "{slice_index}", "{dataset_dir}", "compressed hdf5", "OME-Zarr", "None",
                 "mpi4py", "unknown or misspelled option is an error"):
        assert word in text


def test_a_missing_later_input_stops_the_run_before_any_output(work, capsys):
    argv = _headless(f"--output_filename_format={work}/out/{{nickname}}_{{result_type}}",
                     f"{work}/in/Data_1channel.png", f"{work}/in/missing.png")
    code, err = _run(argv, capsys)
    _assert_one_clear_error(code, err, ["not found", "missing.png"])
    assert list((work / "out").iterdir()) == []


def test_the_logfile_gets_warnings_and_the_error_also_when_quiet(work, capsys):
    log = work / "run.log"
    code, err = _run(_headless(f"--logfile={log}", "--quiet", f"--output_filename_format={work}/out/{{nickname}}",
                               "--output_format=numpy", "--pipeline_result_drange=(0,1)", str(work / "in" / "corrupt.png")),
                     capsys)
    assert code == 2
    lines = log.read_text().splitlines()
    assert lines[-1] == err.strip().splitlines()[-1].removeprefix("hpc-ilastik: ")  # the final line, in the log too
    assert "corrupt.png" in lines[-1] and "damaged or unreadable" in lines[-1]
    # a warning with --quiet still reaches the log (here: a pipeline drange without an export drange is ignored)
    assert any("--pipeline_result_drange is ignored" in line for line in lines[:-1]), lines


def test_a_startup_error_under_mpiexec_is_printed_once(work):
    done = subprocess.run(["mpiexec", "-n", "2", sys.executable, "-m", "hpc_ilastik", "--headless",
                           f"--project={work}/in/nothing.ilp", str(work / "in" / "Data_1channel.png")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("nothing.ilp does not exist") == 1, done.stderr


def test_nan_and_inf_input_values_are_counted_in_one_warning(work, capsys):
    image = iio.imread(API / "Data_1channel.png").astype(np.float32)
    image[3, 4] = np.nan
    image[100, 7:9] = np.inf
    with h5py.File(work / "in" / "float.h5", "w") as f:
        f["data"] = image
    code, err = _run(_headless(f"--output_filename_format={work}/out/{{nickname}}", "--output_format=numpy",
                               f"{work}/in/float.h5/data"), capsys)
    assert code == 0
    warnings = [line for line in err.splitlines() if "NaN or infinite" in line]
    assert warnings == ["float-data: 3 input value(s) are NaN or infinite; the features around them are NaN, and "
                        "pixels with a NaN feature get probability 0 in every class (as in ilastik)"]
    probabilities = np.load(work / "out" / "float-data.npy")
    assert np.all(probabilities[3, 4] == 0) and np.isfinite(probabilities).all()
