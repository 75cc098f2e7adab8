"""What every workflow's headless run does around its own computation: the export settings in force, one
lane of input files per image (one file per role), every input checked before work starts, and the lanes
run in this process or shared file by file across MPI ranks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.axes import INTERNAL_AXES
from hpc_ilastik.io.formats import check_format
from hpc_ilastik.io.inputs import Source, input_names, open_input, resolve_files
from hpc_ilastik.io.writers import EXIT_WRITE_FAILED
from hpc_ilastik.project.common import Project
from hpc_ilastik.run.distributed import PeerError, get_comm, map_items
from hpc_ilastik.run.progress import Progress
from hpc_ilastik.workflows.export import ExportOptions, export_options, planned_paths
from hpc_ilastik.workflows.options import HeadlessOptions, InputOptions

log = logging.getLogger(__name__)

Lane = dict[str, str | None]  # role name → the input given for it (None: not given)
FAILED_INPUTS = 3  # the exit status of a run in which some inputs failed and the others were written


@dataclass(frozen=True)
class Batch:
    """A headless run's inputs and settings, checked: the export in force, the lanes, the MPI communicator
    (None in a single process)."""

    options: HeadlessOptions
    roles: tuple[str, ...]
    export: ExportOptions
    lanes: list[Lane]
    comm: Any | None

    def open_lane(self, lane: Lane) -> dict[str, Source | None]:
        """Every role's input of one lane, opened lazily (nothing is read yet)."""
        axes = role_axes(self.options.inputs, self.roles)
        return {role: None if lane[role] is None else open_input(lane[role], axes[role], self.options.inputs.stack_along)
                for role in self.roles}

    def for_each_lane(self, run_lane: Callable[[Lane, Any | None, bool], None]) -> None:
        """`run_lane(lane, comm, quiet)` for every lane: here, with this run's communicator for its blocks, or,
        under mpiexec without --distributed, one lane per rank at a time (each lane then on one rank, quietly).

        A lane that fails is reported (input and reason) and the others still run, unless --stop_on_error or an
        output cannot be written (disk full); the failures are listed at the end in one UserError (exit status 3). Under --distributed only failures
        before the blocks start (reading, checking: every rank sees them) let the run go on; an error in a
        block ends every rank."""
        run = self.options.run
        first = self.roles[0]
        stop_on_error = run.stop_on_error or len(self.lanes) == 1  # one input: its own error is the message

        def attempt(lane: Lane, comm: Any | None, quiet: bool) -> str | None:
            try:
                run_lane(lane, comm, quiet)
            except PeerError:
                if stop_on_error:
                    raise
                return "failed on rank 0"
            except Exception as err:
                if stop_on_error or getattr(err, "exit_code", None) == EXIT_WRITE_FAILED:
                    raise  # an output that cannot be written (disk full, quota): the next would fail as well
                reason = str(err) if isinstance(err, UserError) else f"internal error: {type(err).__name__}: {err}"
                log.error("%s: %s", lane[first], reason)
                return reason
            return None

        if self.comm is not None and not run.distributed:
            reasons = map_items(self.lanes, lambda lane: attempt(lane, None, True), self.comm, unit="files",
                                progress=Progress(len(self.lanes), unit="files", quiet=run.quiet),
                                describe=lambda lane: f"file {lane[first]}")
        else:
            reasons = [attempt(lane, self.comm, run.quiet) for lane in self.lanes]
        failed = [(lane[first], why) for lane, why in zip(self.lanes, reasons or ()) if why is not None]
        if failed and (self.comm is None or self.comm.Get_rank() == 0):
            raise UserError(f"{len(failed)} of {len(self.lanes)} input(s) failed; the others were written:\n" +
                            "\n".join(f"  {path}: {why}" for path, why in failed), exit_code=FAILED_INPUTS)


def start_batch(project: Project, options: HeadlessOptions, roles: Sequence[str], sources: Mapping[str, Any]) -> Batch:
    """Check everything that can be checked before any work: export settings and format, the lanes, that
    every input exists (cheap: nothing is read), and MPI when asked for."""
    export = export_options(project, options.export, sources, options.run.distributed)
    lanes = make_lanes(options.inputs, tuple(roles), project.workflow_name)
    role_axes(options.inputs, tuple(roles))
    check_format(export.output_format)
    for lane in lanes:
        for spec in lane.values():
            if spec is not None:
                resolve_files(spec)
    _check_distinct_outputs(project, export, [lane[roles[0]] for lane in lanes])
    return Batch(options=options, roles=tuple(roles), export=export, lanes=lanes,
                 comm=get_comm(options.run.distributed))


def _check_distinct_outputs(project: Project, export: ExportOptions, inputs: Sequence[str]) -> None:
    """UserError, before any work, when two inputs would be written to the same file."""
    writer_of: dict[str, str] = {}
    for spec in inputs:
        for path in planned_paths(project, export, *input_names(spec)) or ():
            if path in writer_of:
                raise UserError(f"the inputs {writer_of[path]} and {spec} would both be written to {path}: give "
                                "--output_filename_format a placeholder that tells them apart (e.g. {nickname}, or "
                                "{dataset_dir} for files of the same name in different folders)")
            writer_of[path] = spec


def role_option(role: str) -> str:
    """ilastik's command-line option of an input role: 'Prediction Mask' → --prediction_mask."""
    return "--" + role.lower().replace(" ", "_")


def make_lanes(inputs: InputOptions, roles: tuple[str, ...], workflow_name: str) -> list[Lane]:
    """One lane per image of the first role; every other role given needs one input per image."""
    unknown = [role for role, files in inputs.files.items() if files and role not in roles]
    if unknown:
        raise UserError(f"{role_option(unknown[0])} is not an input of the {workflow_name} workflow (its inputs: "
                        f"{', '.join(role_option(role) for role in roles)})")
    first = list(inputs.files.get(roles[0], ()))
    if not first:
        raise UserError(f"no input files: name them at the end of the command or after {role_option(roles[0])}")
    columns = {roles[0]: first}
    for role in roles[1:]:
        given = list(inputs.files.get(role, ()))
        if given and len(given) != len(first):
            raise UserError(f"{len(given)} {role_option(role)} file(s) for {len(first)} raw input(s): "
                            f"give one {role.lower()} per input")
        columns[role] = given or [None] * len(first)
    return [{role: columns[role][i] for role in roles} for i in range(len(first))]


def role_axes(inputs: InputOptions, roles: tuple[str, ...]) -> dict[str, str | None]:
    """The axes `--input_axes` gives each role (None: the file's own); one value serves every role."""
    if len(inputs.axes) > len(roles):
        raise UserError(f"--input_axes has {len(inputs.axes)} values but the workflow has {len(roles)} roles "
                        f"({', '.join(roles)})")
    if not inputs.axes:
        return {role: None for role in roles}
    return {role: inputs.axes[i] if i < len(inputs.axes) else inputs.axes[0] for i, role in enumerate(roles)}


def training_image(project: Project, lane_index: int, role: str | None = None) -> Source:
    """A training lane's image of `role` (default `Raw Data`, else the lane's first role) opened with the axes
    the project records.

    A PNG-like file that ilastik recorded with an extra channel axis (yx file, `yxc` in the project) keeps
    the file's own axes; the tzyxc view is the same.
    """
    roles = project.lanes[lane_index].roles
    ref = roles.get(role) if role else roles.get("Raw Data") or next((r for r in roles.values() if r), None)
    if ref is None:
        raise UserError(f"Lane {lane_index + 1} of {project.path} has labels but no {role or 'training'} image to "
                        "compute features from.")
    spec = f"{project.path}/{ref.path.lstrip('/')}" if ref.location == "ProjectInternal" else ref.path
    try:
        source = open_input(spec)
        if ref.axes and ref.axes != source.axes and len(ref.axes) == len(source.shape):
            source = open_input(spec, axes=ref.axes)
    except UserError as exc:
        raise UserError(f"Training needs the image '{ref.nickname}' of lane {lane_index + 1} of {project.path}, "
                        f"which cannot be read: {exc}") from exc
    recorded = dict(zip(ref.axes, ref.shape or ()))
    if ref.shape is not None and tuple(recorded.get(key, 1) for key in INTERNAL_AXES) != source.shape_tzyxc:
        raise UserError(f"The training image {spec} ({source.axes} {tuple(source.shape)}) is not the one the project "
                        f"was trained on ({ref.axes} {tuple(ref.shape)}).")
    return source
