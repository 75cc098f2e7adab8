"""The command line: ilastik's headless interface (`--headless ...`) plus `train` and `demo`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn, Sequence

from hpc_ilastik import __version__
from hpc_ilastik.errors import UserError
from hpc_ilastik.run import interrupt
from hpc_ilastik.run.distributed import PeerError
from hpc_ilastik.run.process import finish, keep_freed_memory, start_numba_lightly, started
from hpc_ilastik.run.progress import INTERVAL_ENV, launcher_rank
from hpc_ilastik.workflows.options import ExportRequest, HeadlessOptions, InputOptions, RunOptions, TrainingOptions

log = logging.getLogger("hpc_ilastik")

OUTPUT_FORMAT_HELP = (
    "file format (default: the project's stored setting, else 'compressed hdf5'; quote names with spaces): "
    "hdf5, compressed hdf5 (gzip), n5, compressed n5, zarr, single-scale OME-Zarr, multi-scale OME-Zarr, numpy "
    "(any shape and type); tif/tiff (one 2D image, any channels); multipage tiff (an OME-TIFF of a 3D+ image); "
    "the 2D image formats png, jpg, jpeg, bmp, gif, pnm, pgm, ppm, pbm, ras, hdr (one 2D image; png and the pnm "
    "family take uint8/uint16, jpg/gif/bmp/ras uint8, hdr float32 RGB: use --export_dtype and, for "
    "probabilities, --export_source='Simple Segmentation' or the dranges); '<any of these> sequence' and "
    "'multipage tiff sequence' (one file per slice along the first axis of the output, which "
    "--output_axis_order chooses; the template needs {slice_index}). A format that cannot hold the export is "
    "an error before anything is computed; dvid and blockwise hdf5 are not supported"
)

DESCRIPTION = """\
Run a trained ilastik project headless: a drop-in for `ilastik --headless`.

  hpc-ilastik --headless --project=P.ilp [options] image1.png image2.h5/data ...
  mpiexec -n N hpc-ilastik --headless --distributed --project=P.ilp --output_format=n5 big.h5/data
  hpc-ilastik train --raw IMAGE --labels LABELS --output P.ilp
  hpc-ilastik demo [--distributed]

Options are spelled as ilastik spells them (export options with underscores). Unlike ilastik, an
unknown or misspelled option is an error (ilastik only warns and may then take its value for an
input file), and every mistake is reported as one line without a traceback (--debug shows it).
"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises UserError instead of exiting, and names the right spelling of an option."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see hpc-ilastik --help)")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            raise UserError(self._explain_unknown(unknown[0]))
        return parsed

    def _explain_unknown(self, token: str) -> str:
        option = token.split("=", 1)[0]
        if not option.startswith("-"):
            return f"unexpected argument {token!r} (see hpc-ilastik --help)"
        known = {s for action in self._actions for s in action.option_strings}
        for candidate in (option.replace("-", "_").replace("__", "--", 1), "--" + option.lstrip("-").replace("-", "_")):
            if candidate in known:
                return f"unknown option {option}: ilastik spells it {candidate}"
        dashed = "--" + option.lstrip("-").replace("_", "-")
        if dashed in known:
            return f"unknown option {option}: ilastik spells it {dashed}"
        return f"unknown option {option} (see hpc-ilastik --help for the options)"


_BOOLEANS = {"1": True, "yes": True, "true": True, "on": True, "0": False, "no": False, "false": False, "off": False}


def _boolean(text: str) -> bool:
    """A configparser-style boolean, as ilastik's --readonly takes it."""
    if text.lower() not in _BOOLEANS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use true/false, yes/no, on/off or 1/0)")
    return _BOOLEANS[text.lower()]


def _bare_readonly(argv: list[str]) -> list[str]:
    """`--readonly FILE`: unlike ilastik, a following token that is no boolean stays an input file."""
    return ["--readonly=true" if token == "--readonly" and argv[i + 1:i + 2] and argv[i + 1].lower() not in _BOOLEANS
            else token for i, token in enumerate(argv)]


# Input roles beyond Raw Data (ilastik's option = the role's name in lower case with underscores): one file
# per raw input, of the same t/z/y/x shape.
_ROLES = (
    ("Prediction Mask", "MASK", "Pixel Classification: pixels where the mask is 0 get probability 0 (so Simple "
                                "Segmentation 1)"),
    ("Prediction Maps", "MAPS", "Object Classification from prediction maps: the probabilities to threshold"),
    ("Segmentation Image", "SEGMENTATION", "Object Classification from a binary image: objects are its connected "
                                           "components of equal non-zero value"),
    ("Label Image", "LABELS", "Object Classification from a label image: every non-zero id is one object"),
    ("Binary Image", "BINARY", "Structured-learning tracking from a binary image: objects are its connected "
                               "components (conservation tracking names this role --segmentation_image)"),
    ("Probabilities", "PROBABILITIES", "Multicut: the boundary probability map to segment (required)"),
    ("Superpixels", "SUPERPIXELS", "Multicut: superpixels to use as they are instead of the project's watershed"),
    ("Groundtruth", "GROUNDTRUTH", "Multicut: accepted as ilastik accepts it (it only serves training in the GUI)"),
)


def _both(name: str) -> list[str]:
    """ilastik's role and data-selection options exist with underscores and with dashes."""
    return [f"--{name}", f"--{name.replace('_', '-')}"]


def headless_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hpc-ilastik", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"hpc-ilastik {__version__}")
    g = p.add_argument_group("general")
    g.add_argument("--headless", action="store_true", help="run without GUI (required: hpc-ilastik has no GUI)")
    g.add_argument("--project", metavar="PROJECT.ilp",
                   help="the trained ilastik project (Pixel Classification, Autocontext, Object Classification, "
                        "Cell Density Counting); opened read-only, never locked or modified. Required with --headless")
    g.add_argument("--readonly", nargs="?", const=True, default=None, type=_boolean, metavar="BOOL",
                   help="accepted for compatibility (bare, or =true/false, yes/no, on/off, 1/0); the project is "
                        "always opened read-only and never modified, even with --retrain")
    g.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    g.add_argument("--quiet", action="store_true", help="no progress or info output on stderr")
    g.add_argument("--logfile", metavar="FILE",
                   help="also write the log to this file: info lines, and with --quiet still the warnings and errors, "
                        "including the final error line")
    g.add_argument("--redirect_output", metavar="FILE",
                   help="append everything this run prints (progress, log, the final line) to FILE instead of the "
                        "terminal, as ilastik does")
    g.add_argument("--process_name", metavar="NAME", help="start every log line with NAME (as ilastik's log prefix)")
    g.add_argument("--configfile", metavar="FILE",
                   help="ilastik's settings file (ilastik.ini): its [lazyflow] threads and total_ram_mb are used where "
                        "LAZYFLOW_THREADS / LAZYFLOW_TOTAL_RAM_MB are not set (default: ~/.config/ilastik/ilastik.ini "
                        "when it exists)")
    g.add_argument("--clean_paths", action="store_true",
                   help="accepted for compatibility and ignored: ilastik drops foreign folders from PYTHONPATH to "
                        "isolate its bundled Python; hpc-ilastik runs in the environment it was installed in")
    g.add_argument("--progress_interval", type=float, metavar="SECONDS",
                   help="seconds between progress lines (default: 2 on a terminal, where the line is rewritten in "
                        "place; 30 when stderr goes to a file, e.g. a SLURM log)")

    i = p.add_argument_group("input")
    i.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="input images, one output each: HDF5/N5/zarr with the dataset path (file.h5/data, x.n5/raw, "
                        "x.zarr/s0 for one OME-Zarr scale), TIFF, PNG, JPEG, BMP, GIF, .npy, .npz; relative to the "
                        "current directory. A quoted glob ('slices/*.png') or paths joined by ':' are one stacked image")
    i.add_argument(*_both("raw_data"), dest="raw_data", nargs="+", metavar="INPUT",
                   help="the same inputs given to the Raw Data role by name (instead of positionally)")
    for role, metavar, text in _ROLES:
        dest = role.lower().replace(" ", "_")
        i.add_argument(*_both(dest), dest=dest, nargs="+", metavar=metavar, help=text)
    i.add_argument(*_both("input_axes"), dest="input_axes", metavar="AXES",
                   help="the axes of the input files, e.g. yx, zyx, tyxc: letters of tzyxc, x and y required, one per "
                        "axis of the file (else an error); 'RAW,MASK' gives one per role, None keeps the file's own. "
                        "Default: the file's metadata (HDF5/N5 axistags, OME-Zarr axes, TIFF), else ilastik's shape "
                        "rule (2D yx, 3D yxc if the last axis is <= 4 long else zyx, 4D zyxc, 5D tzyxc)")
    i.add_argument(*_both("ignore_training_axistags"), dest="ignore_training_axistags", action="store_true",
                   help="accepted for compatibility: hpc-ilastik never imposes the training image's axes on the inputs "
                        "(it reads each file's own axes); inputs must still have the training image's spatial axes "
                        "and channel count")
    i.add_argument(*_both("stack_along"), dest="stack_along", default="z", choices=["z", "t", "c"],
                   help="axis along which the files of a quoted glob are stacked (default z): concatenated if the "
                        "files have that axis, else it becomes a new axis")
    i.add_argument(*_both("preconvert_stacks"), dest="preconvert_stacks", action="store_true",
                   help="accepted for compatibility; stacks are read slice by slice without conversion")

    e = p.add_argument_group("export (ilastik spells these with underscores only; each one given overrides the "
                             "setting stored in the project, whose stored settings apply otherwise)")
    e.add_argument("--export_source", metavar="NAME",
                   help="what to export, matched ignoring case (quote names with spaces). Pixel Classification: "
                        "Probabilities (default; float32, one channel per label), 'Simple Segmentation' (uint8, "
                        "argmax + 1), Uncertainty (1 - (highest - second-highest probability)), Features (the "
                        "feature channels), Labels (uint8, 0 for new images). Autocontext: '<source> Stage 1', "
                        "'<source> Stage 2' (default 'Probabilities Stage 2'), 'Input Stage 1/2', "
                        "'Probabilities All Stages'. An unknown name is an error listing the valid ones. "
                        "hpc-ilastik extension: several names separated by commas are computed in one pass, each "
                        "into its own file (the file name template must contain {result_type}), e.g. "
                        "--export_source='Probabilities,Simple Segmentation'")
    e.add_argument("--output_format", metavar="FORMAT", help=OUTPUT_FORMAT_HELP)
    e.add_argument("--output_filename_format", metavar="TEMPLATE",
                   help="output path template (default: the project's, else {dataset_dir}/{nickname}_{result_type}); "
                        "placeholders {dataset_dir} (the input's folder) {nickname} (input name without extension) "
                        "{result_type} (the export source, spaces kept) {roi} {t_start} {t_stop} {z_start} ... "
                        "{x_stop} (the exported region) and, for sequence formats (required there), {slice_index}. "
                        "The text after the last dot is replaced by the format's extension. Relative paths: "
                        "against the current directory when given here, against the project's folder when stored")
    e.add_argument("--output_internal_path", metavar="PATH",
                   help="dataset path inside HDF5, N5 and zarr outputs (default: the project's, else exported_data)")
    e.add_argument("--export_dtype", choices=["uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64"],
                   help="output pixel type (default: the project's, else the export source's type). Without the "
                        "two dranges below it is a plain cast (probabilities to uint8 give 0/1)")
    e.add_argument("--output_axis_order", metavar="ORDER",
                   help="axis order of the output, e.g. cyx or tczyx (default: the project's, else the input's own "
                        "order plus c); only axes of size 1 may be left out, new axes get size 1. OME-Zarr is "
                        "always written tczyx")
    e.add_argument("--pipeline_result_drange", metavar="(MIN,MAX)",
                   help="value range of the export source for renormalisation, e.g. '(0.0,1.0)'; used only with "
                        "--export_drange (alone it is ignored, as in ilastik)")
    e.add_argument("--export_drange", metavar="(MIN,MAX)",
                   help="value range to renormalise to, e.g. '(0,255)'; needs --pipeline_result_drange (else an "
                        "error). out = min' + (x - min)*(max' - min')/(max - min), not clipped; float results going "
                        "to an integer --export_dtype are rounded to the nearest integer (ilastik 1.4.2)")
    e.add_argument("--cutout_subregion", metavar="[(START,...),(STOP,...)]",
                   help="export only this region: one start and one stop per axis of the image's internal order "
                        "(yxc for 2D, zyxc for 3D, tyxc, tzyxc; or all of tzyxc), e.g. '[(0,0,None),(100,200,None)]'; "
                        "None means from the start / to the end. Features near the region's border use the whole "
                        "image, as in ilastik. Unlike ilastik (which clips), a region beyond the image is an error")

    o = p.add_argument_group("object classification")
    o.add_argument("--table_filename", metavar="PATH",
                   help="write the object table here ({dataset_dir} and {nickname} are filled in): CSV as "
                        "<name>_table.csv, HDF5 for a .h5/.hdf5 name. A project with stored table settings uses "
                        "them; without, unlike ilastik (which refuses), the table holds the features the object "
                        "classifier uses")

    k = p.add_argument_group("tracking")
    k.add_argument("--export_plugin", metavar="NAME",
                   help="with --export_source=Plugin: CSV-Table, CellTrackingChallenge, Contours, Contours-With-Head, "
                        "Multi-Worm-Tracker, Fiji-MaMuT or JSON (ours: the lineage graph, ids as in the label images); "
                        "the file name is --output_filename_format with {result_type} = the plugin's name")
    k.add_argument("--big_data_viewer_xml_file", metavar="PATH",
                   help="the BigDataViewer XML file of the raw data (needed by --export_plugin=Fiji-MaMuT)")

    n = p.add_argument_group("cell density counting")
    n.add_argument("--csv-export-file", dest="csv_export_file", metavar="PATH",
                   help="also write the count of every image to this CSV file: one line <nickname>,<count> per input "
                        "in input order, no header (dashes, as in ilastik; like ilastik, the density images are "
                        "exported too). Written once every image is done, so an interrupted run leaves none")

    g.add_argument("--threads", type=int,
                   help="blocks computed at once by this process, or by each MPI rank (default: ilastik's "
                        "LAZYFLOW_THREADS if set; else under MPI SLURM's --cpus-per-task, or 1; else every core this "
                        "process may use)")
    g.add_argument("--stop_on_error", action="store_true",
                   help="stop at the first input that fails (ilastik's behaviour). By default every input is "
                        "attempted: one that cannot be read or processed is reported and the others are still "
                        "written; the run then ends with a list of the failed inputs and exit status 3")

    d = p.add_argument_group("distributed (MPI)")
    d.add_argument("--distributed", action="store_true",
                   help="share one volume's blocks across MPI ranks (mpiexec/srun); every rank computes and writes "
                        "its own chunks (n5, zarr or OME-Zarr output; a rerun resumes). Needs mpi4py "
                        "(pip install 'hpc-ilastik[mpi]'). Without it, several inputs under mpiexec are shared "
                        "file by file")
    d.add_argument(*_both("distributed_block_roi"), dest="distributed_block_roi", metavar="ROI",
                   help="block shape: an integer (x=y=z) or a dict like '{\"x\": 256, \"y\": 256, \"z\": 64, \"t\": 1, \"c\": None}'")

    w = p.add_argument_group("training")
    w.add_argument("--retrain", action="store_true",
                   help="train a new classifier from the labels and training images stored in the project (as "
                        "ilastik, seeded: pixel forests of 100 trees on the same features, the object classifier on "
                        "the labelled objects, Counting's four regressors), then predict; the project is not modified "
                        "(ilastik would save it). A project without a trained classifier is trained this way "
                        "automatically")
    w.add_argument("--tree-count", dest="tree_count", type=int, metavar="N",
                   help="trees of a newly trained forest (default 100); implies --retrain (dashes, as in ilastik)")
    return p


def train_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hpc-ilastik train", description="Train a Pixel Classification project (.ilp) from an image and a label image, without the GUI.")
    p.add_argument("--raw", required=True, help="the training image (HDF5 file.h5/path, TIFF, PNG, npy, zarr, N5)")
    p.add_argument("--labels", required=True, help="label image of the same shape: 0 = unlabelled, 1..K = classes")
    p.add_argument("--features", help="'GaussianSmoothing:0.7,1.6;HessianOfGaussianEigenvalues:1.6,3.5' or a YAML file (default: a sensible set)")
    p.add_argument("--tree-count", dest="tree_count", type=int, default=100, help="number of trees (default 100, as ilastik)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the forest (default 0: the same inputs give the same project)")
    p.add_argument("--input_axes", help="axes of the raw image and the labels, e.g. zyx")
    p.add_argument("--store-inside", dest="store_inside", action="store_true", help="copy the raw image into the project")
    p.add_argument("--output", required=True, help="the project file to write")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def demo_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hpc-ilastik demo", description="Make a synthetic 3D sample, train a project on it, predict headless and report the accuracy.")
    p.add_argument("--output-dir", dest="output_dir", default="hpc-ilastik-demo", help="where to write (default ./hpc-ilastik-demo)")
    p.add_argument("--distributed", action="store_true", help="predict with `mpiexec -n 2` (needs hpc-ilastik[mpi])")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever sys.stderr is when a record is written (--redirect_output, a test's capture), not to the
    stream of the moment the handler was made, which may be closed by then."""

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(debug: bool, quiet: bool, logfile: str | None = None, process_name: str | None = None) -> None:
    from hpc_ilastik.run.progress import rank_prefix

    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    handlers: list[logging.Handler] = [_StderrHandler()]
    if logfile:
        handlers.append(logging.FileHandler(logfile))
    prefix = rank_prefix() + (f"{process_name} " if process_name else "").replace("%", "%%")
    fmt = f"{prefix}%(levelname)s %(name)s: %(message)s" if debug else f"{prefix}%(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=handlers, force=True)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "train":
        args = train_parser().parse_args(argv[1:])
        _setup_logging(args.debug, args.quiet)
        _check_tree_count(args.tree_count)
        start_numba_lightly()
        from hpc_ilastik.train import train_command

        started()
        train_command(raw=args.raw, labels=args.labels, features=args.features, tree_count=args.tree_count,
                      output=args.output, raw_axes=args.input_axes, store_inside=args.store_inside, seed=args.seed)
        return 0
    if argv and argv[0] == "demo":
        args = demo_parser().parse_args(argv[1:])
        _setup_logging(args.debug, args.quiet)
        start_numba_lightly()
        from hpc_ilastik.demo import run_demo

        started()
        return run_demo(args.output_dir, distributed=args.distributed, quiet=args.quiet)
    args = headless_parser().parse_args(_bare_readonly(argv))
    if args.redirect_output:
        try:
            sys.stdout = sys.stderr = open(args.redirect_output, "a", buffering=1)  # main() puts them back
        except OSError as exc:
            raise UserError(f"--redirect_output: cannot open {args.redirect_output}: {exc.strerror}") from None
    _setup_logging(args.debug, args.quiet, args.logfile, args.process_name)
    apply_ilastik_config(args.configfile)
    if args.clean_paths:
        log.info("--clean_paths is ignored: hpc-ilastik runs in the Python environment it was installed in")
    if args.progress_interval is not None:
        if not args.progress_interval >= 0:
            raise UserError(f"--progress_interval must be a number of seconds of at least 0, not {args.progress_interval}")
        os.environ[INTERVAL_ENV] = str(args.progress_interval)  # read by every progress line, on every rank
    if not args.headless:
        raise UserError("hpc-ilastik has no GUI: add --headless (or use the 'train' / 'demo' subcommands)")
    if not args.project:
        raise UserError("--headless needs --project=PROJECT.ilp")
    options = headless_options(args)
    start_numba_lightly()
    from hpc_ilastik.workflows.headless import run_headless

    started()
    run_headless(options)
    return 0


def headless_options(args: argparse.Namespace) -> HeadlessOptions:
    """The parsed command line as the typed options the workflows take."""
    _check_tree_count(args.tree_count)
    if args.raw_data and args.inputs:
        raise UserError("give the input files either as positional arguments or after --raw_data, not both")
    files = {"Raw Data": tuple(args.raw_data or args.inputs)}
    files.update({role: tuple(getattr(args, role.lower().replace(" ", "_")) or ()) for role, _, _ in _ROLES})
    axes = tuple(None if part.strip() in ("", "None") else part.strip().lower()
                 for part in args.input_axes.split(",")) if args.input_axes else ()
    return HeadlessOptions(
        project=args.project,
        inputs=InputOptions(files=files, axes=axes, stack_along=args.stack_along),
        export=ExportRequest(
            sources=tuple(args.export_source.split(",")) if args.export_source else (),
            output_format=args.output_format, filename_template=args.output_filename_format,
            internal_path=args.output_internal_path, export_dtype=args.export_dtype, axis_order=args.output_axis_order,
            pipeline_drange=args.pipeline_result_drange, export_drange=args.export_drange,
            cutout=args.cutout_subregion, table_filename=args.table_filename,
            csv_export_file=args.csv_export_file, export_plugin=args.export_plugin,
            big_data_viewer_xml_file=args.big_data_viewer_xml_file),
        run=RunOptions(distributed=args.distributed, block_roi=args.distributed_block_roi, threads=args.threads,
                       quiet=args.quiet, stop_on_error=args.stop_on_error),
        training=TrainingOptions(retrain=args.retrain, tree_count=args.tree_count),
    )


def run() -> NoReturn:
    """The `hpc-ilastik` console script: `main`, then `finish`."""
    finish(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `hpc-ilastik` command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    debug = "--debug" in argv or os.environ.get("HPC_ILASTIK_DEBUG") == "1"
    previous = interrupt.install_handlers()
    streams = sys.stdout, sys.stderr  # --redirect_output replaces them
    try:
        return _dispatch(argv)
    except interrupt.Interrupted as stop:
        if launcher_rank()[0] == 0:  # every rank stops; one says so
            _report(_stopped(stop))
        return 128 + stop.signum
    except PeerError:  # another MPI rank failed and has reported it
        return 1
    except UserError as err:
        if debug:
            log.exception("error")
        # Errors that reach here are the same on every rank (the command line, the project, the inputs' checks;
        # a rank's own failures are reported where they happen): said once, by rank 0, unless debugging.
        if launcher_rank()[0] == 0 or debug:
            _report(f"error: {err}")
        return err.exit_code
    except KeyboardInterrupt:
        _report("interrupted; re-run the same command to resume")
        return 130
    except Exception as err:  # an unexpected failure: still one clear line unless --debug
        if debug:
            raise
        _report(f"internal error: {type(err).__name__}: {err} (re-run with --debug for the traceback)")
        return 1
    finally:
        interrupt.restore_handlers(previous)
        if sys.stderr is not streams[1]:
            sys.stderr.close()
            sys.stdout, sys.stderr = streams


def apply_ilastik_config(path: str | None) -> None:
    """ilastik's settings file (`--configfile`, else the user's ilastik.ini): `[lazyflow] threads` and
    `total_ram_mb` become LAZYFLOW_THREADS / LAZYFLOW_TOTAL_RAM_MB where those are not set, as ilastik
    prefers its environment variables to the file (threads -1 and total_ram_mb 0 mean unset)."""
    import configparser

    if path is not None and not os.path.isfile(path):
        raise UserError(f"the ilastik config file {path} does not exist or is not a file")
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    path = path or next((p for p in (os.path.join(home, "ilastik", "ilastik.ini"),
                                     os.path.join(os.path.expanduser("~"), ".ilastikrc")) if os.path.isfile(p)), None)
    if path is None:
        return
    config = configparser.ConfigParser()
    try:
        config.read(path)
        threads = config.getint("lazyflow", "threads", fallback=-1)
        ram = config.getint("lazyflow", "total_ram_mb", fallback=0)
    except (configparser.Error, ValueError) as exc:
        raise UserError(f"the ilastik config file {path} cannot be read: {exc}") from None
    if threads != -1:
        os.environ.setdefault("LAZYFLOW_THREADS", str(threads))
    if ram > 0:
        os.environ.setdefault("LAZYFLOW_TOTAL_RAM_MB", str(ram))


def _check_tree_count(count: int | None) -> None:
    if count is not None and count < 1:
        raise UserError(f"--tree-count must be at least 1, not {count}")


def _report(text: str) -> None:
    """The run's last line: on stderr, and in the --logfile (whatever the log level)."""
    print(f"hpc-ilastik: {text}", file=sys.stderr)
    record = logging.LogRecord("hpc_ilastik", logging.ERROR, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _stopped(stop: interrupt.Interrupted) -> str:
    """The one line of a run stopped by a signal."""
    where = f" with {stop.done} of {stop.total} {stop.unit} done" if stop.total else ""
    return (f"stopped by {stop.name}{where}; no output was left half-written. Run the same command again: N5, "
            "zarr and OME-Zarr outputs resume from their finished blocks, other formats are written from the start")
