"""The tracking export plugins at the edge: the options ilastik checks (`--export_source=Plugin` with
`--export_plugin`, Fiji-MaMuT with `--big_data_viewer_xml_file`), the file name (the export template with
{result_type} = the plugin's name, `TrackingBaseDataExportApplet._export_with_plugin`), the label images and
features the plugins see (`OpConservationTracking._create_plugin_export_context`: with merger resolution the
relabelled image and its objects' standard features, else the label image and every computed feature), and the
plugin's files written all or nothing (rank 0)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from hpc_ilastik.errors import UserError
from hpc_ilastik.io.file_sets import write_file_set
from hpc_ilastik.io.paths import check_not_overwriting, format_path
from hpc_ilastik.objects import features, standard
from hpc_ilastik.tracking.plugins import PLUGINS, TrackingExport
from hpc_ilastik.workflows.export import ExportOptions
from hpc_ilastik.workflows.options import ExportRequest

if TYPE_CHECKING:
    from hpc_ilastik.project.tracking import TrackingProject
    from hpc_ilastik.workflows.batch import Batch
    from hpc_ilastik.workflows.object_measurement import ObjectImage

log = logging.getLogger(__name__)

PLUGIN = "Plugin"
MAMUT = "Fiji-MaMuT"
# `OpConservationTracking._setupRelabeledFeatureSlot`: the features recomputed on the relabelled image
# (trackingFeatureExtraction/config.py vigra_features ∪ the object-count selection; the two Coord<Principal<…>>
# features are not computed here)
RELABELLED_FEATURES = ("Count", "RegionCenter", "Mean", "Variance", "RegionRadii", "Maximum", "Minimum", "Skewness",
                       "Sum", "Kurtosis", "RegionAxes")


def check_plugin_options(export: ExportOptions, request: ExportRequest) -> str | None:
    """The plugin asked for (None for an image export), refused as ilastik refuses inconsistent options."""
    plugin_source = any(name == PLUGIN for name, _ in export.sources)
    if request.export_plugin is not None and not plugin_source:
        raise UserError("--export_plugin applies only with --export_source=Plugin")
    if not plugin_source:
        return None
    if len(export.sources) > 1:
        raise UserError("--export_source=Plugin cannot be combined with other export sources in one run")
    if request.export_plugin is None:
        raise UserError(f"--export_source=Plugin needs --export_plugin (one of: {', '.join(PLUGINS)})")
    plugin = next((name for name in PLUGINS if name.lower() == request.export_plugin.strip().lower()), None)
    if plugin is None:
        raise UserError(f"unknown --export_plugin {request.export_plugin!r}; the tracking export plugins are: "
                        f"{', '.join(PLUGINS)}")
    if plugin == MAMUT:
        xml = request.big_data_viewer_xml_file
        if xml is None:
            raise UserError("--export_plugin=Fiji-MaMuT needs --big_data_viewer_xml_file (the BigDataViewer XML of "
                            "the raw data)")
        if not os.path.isfile(xml):
            raise UserError(f"the BigDataViewer XML file {xml} does not exist")
    return plugin


def plugin_filename(project: TrackingProject, image: ObjectImage, batch: Batch, plugin: str) -> str:
    """The name handed to the plugin: the export template with {result_type} = the plugin's name, no extension
    added; relative to the working directory when given on the command line, else to the project's folder."""
    options = batch.export
    raw = image.raw
    region = tuple(slice(0, n) for n in raw.shape_tzyxc)
    name = format_path(options.filename_template, dataset_dir=raw.dataset_dir, nickname=raw.nickname,
                       result_type=plugin, region=region)
    path = os.path.normpath(os.path.join(options.base_dir(project.path), name))
    check_not_overwriting(path, list(raw.paths) + [os.path.abspath(project.path)])
    return path


def write_plugin(plugin: str, data: TrackingExport, filename: str, nickname: str) -> list[str]:
    """Run one plugin on a solved time series and write its files all or nothing; returns their paths."""
    paths = write_file_set([(path, content) for path, content in PLUGINS[plugin](data, filename)])
    log.info("%s: %s export written to %s", nickname, plugin, filename if len(paths) > 2 else ", ".join(paths))
    return paths


def relabelled_features(image: ObjectImage, table: dict, labels: np.ndarray, t: int,
                        new_ids: list[int]) -> dict[str, dict[str, np.ndarray]]:
    """A frame's default and standard features with rows for `new_ids`, the objects its mergers were split into,
    measured on the relabelled image `labels` (the merger's own row stays, as ilastik's relabelled features keep
    its id)."""
    names = [n for n in RELABELLED_FEATURES if n in table.get(standard.PLUGIN, {})]
    kept = {features.DEFAULT_PLUGIN: dict(table[features.DEFAULT_PLUGIN]),
            standard.PLUGIN: {n: table[standard.PLUGIN][n] for n in names}}
    if not new_ids:
        return kept
    n_rows = max(new_ids) + 1
    for plugin in kept.values():
        for name, values in plugin.items():
            grown = np.zeros((n_rows, values.shape[1]))
            grown[:len(values)] = values
            plugin[name] = grown
    wanted = {standard.PLUGIN: {n: {} for n in names}}
    labels_zyx = labels[np.newaxis] if labels.ndim == 2 else labels
    raw_shape = tuple(image.raw.shape_tzyxc)
    for new_id in new_ids:
        mask = labels_zyx == new_id
        if not mask.any():
            continue
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
        extent = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, image.frame_shape))
        raw = image.raw.read((slice(t, t + 1),) + extent + (slice(0, raw_shape[4]),))[0].astype(np.float32)
        crop = features.ObjectCrop(raw, mask[extent], tuple(s.start for s in extent), image.frame_shape)
        values = raw[mask[extent]][:, 0]
        measured = features.object_features(crop, wanted, (float(values.min()), float(values.max())))
        for plugin, own in measured.items():
            for name, value in own.items():
                if name in kept.get(plugin, {}):
                    kept[plugin][name][new_id] = value
    return kept
