"""ilastik's tracking export plugins (`--export_source=Plugin --export_plugin=NAME`) as pure functions.

Each plugin is `export_<name>(data: TrackingExport, filename: str) -> list[PluginFile]`: it returns the files
ilastik's plugin of that name writes (ilastik `ilastik/plugins_default/tracking_*_export.py`), and writes
nothing itself. `filename` is what ilastik hands its plugins: the export path format with its placeholders
filled in (`TrackingBaseDataExportApplet._export_with_plugin`), e.g. `<dataset_dir>/<nickname>_<plugin name>`;
each plugin appends its own suffix:

=====================  ============================================================================
plugin                 files made from `filename`
=====================  ============================================================================
CSV-Table              `<filename>.csv`
CellTrackingChallenge  folder `<filename>/` with `res_track.txt`, `mask000.tif`, `mask001.tif`, ... (one
                       per frame, 3-digit zero padding)
Contours               `<filename>.outline` (2-D only)
Contours-With-Head     `<filename>.contours` (2-D only, needs a raw image with a head channel 2)
Multi-Worm-Tracker     `<filename>.summary`, `<filename>.blobs` (2-D only)
Fiji-MaMuT             `<filename>_mamut.xml` (needs the BigDataViewer XML path)
JSON (ours)            `<filename>.json`
=====================  ============================================================================

Text files come back as `str` (write them as they are, UTF-8, no newline translation). The CTC masks come
back as arrays; `ctc.py` says exactly how to write them. The inputs are what ilastik's
`OpConservationTracking._create_plugin_export_context` passes: with merger resolution, the merger-relabelled
label image (`RelabeledImage`: resolved merger pixels carry the new object ids) and features recomputed on
it (`OpRelabeledMergerFeatureExtraction`); the solved traxel graph after merger resolution with hytra's
`computeLineage` ids.
"""

from __future__ import annotations

from collections.abc import Callable

from hpc_ilastik.tracking.plugins.base import Features, PluginFile, TrackingExport
from hpc_ilastik.tracking.plugins.contours import export_contours, export_contours_with_head
from hpc_ilastik.tracking.plugins.csv_table import export_csv
from hpc_ilastik.tracking.plugins.ctc import export_ctc
from hpc_ilastik.tracking.plugins.json_graph import export_json
from hpc_ilastik.tracking.plugins.mamut import export_mamut
from hpc_ilastik.tracking.plugins.mwt import export_mwt

__all__ = ["PLUGINS", "Features", "PluginFile", "TrackingExport", "CSV_TABLE", "CTC", "CONTOURS", "CONTOURS_WITH_HEAD",
           "MWT", "MAMUT", "JSON"]

CSV_TABLE, CTC, CONTOURS, CONTOURS_WITH_HEAD = "CSV-Table", "CellTrackingChallenge", "Contours", "Contours-With-Head"
MWT, MAMUT, JSON = "Multi-Worm-Tracker", "Fiji-MaMuT", "JSON"

PLUGINS: dict[str, Callable[[TrackingExport, str], list[PluginFile]]] = {
    CSV_TABLE: export_csv,
    CTC: export_ctc,
    CONTOURS: export_contours,
    CONTOURS_WITH_HEAD: export_contours_with_head,
    MWT: export_mwt,
    MAMUT: export_mamut,
    JSON: export_json,
}
