"""What a headless run is asked to do, as typed values: the command line builds these, every workflow takes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class InputOptions:
    """The input files of every role, as given: `files["Raw Data"]` lists one entry per image (a path,
    `file.h5/inner/path`, a glob or paths joined by os.pathsep); the other roles give one per image too."""

    files: Mapping[str, tuple[str, ...]]
    axes: tuple[str | None, ...] = ()  # --input_axes per role in the workflow's role order; () = each file's own
    stack_along: str = "z"             # axis along which the files of one glob are stacked


@dataclass(frozen=True)
class ExportRequest:
    """The export settings the command line gives; None keeps the project's stored setting."""

    sources: tuple[str, ...] = ()       # export source names as typed (several: one file each)
    output_format: str | None = None
    filename_template: str | None = None
    internal_path: str | None = None
    export_dtype: str | None = None
    axis_order: str | None = None
    pipeline_drange: str | None = None  # '(min,max)' list-strings, as ilastik takes them
    export_drange: str | None = None
    cutout: str | None = None
    table_filename: str | None = None   # Object Classification: the object table's file
    csv_export_file: str | None = None  # Cell Density Counting: the counts file
    export_plugin: str | None = None    # Tracking: the plugin of --export_source=Plugin
    big_data_viewer_xml_file: str | None = None  # Tracking: the raw data's BigDataViewer XML (Fiji-MaMuT)


@dataclass(frozen=True)
class RunOptions:
    """How the work is shared: blocks, threads, MPI ranks, progress."""

    distributed: bool = False      # one volume's blocks across MPI ranks
    block_roi: str | None = None   # --distributed_block_roi text
    threads: int | None = None     # blocks at once per process (rank); None: see blockwise.thread_count
    quiet: bool = False
    stop_on_error: bool = False    # False: a failing input is reported and the others are still processed


@dataclass(frozen=True)
class TrainingOptions:
    """Whether to train classifiers from the project's labels instead of using its stored ones."""

    retrain: bool = False
    tree_count: int | None = None  # trees of a newly trained forest; given, it implies retraining

    @property
    def retraining(self) -> bool:
        """Train anew even where the project stores a classifier: --retrain, or --tree-count given."""
        return self.retrain or self.tree_count is not None


@dataclass(frozen=True)
class HeadlessOptions:
    """One `--headless` run: the project and what to do with it."""

    project: str
    inputs: InputOptions
    export: ExportRequest = field(default_factory=ExportRequest)
    run: RunOptions = field(default_factory=RunOptions)
    training: TrainingOptions = field(default_factory=TrainingOptions)
