"""The ilastik workflows a project may name (its `workflowName`), and which module of `hpc_ilastik.project` reads
each: the names alone, so that a run imports the reader (and its libraries) of its own workflow only."""

from __future__ import annotations

PIXEL_CLASSIFICATION = "Pixel Classification"  # also what ilastik assumes when a project names no workflow
AUTOCONTEXT = "AutocontextTwoStage"
COUNTING = "Cell Density Counting"
MULTICUT = "Edge Training With Multicut"
OBJECT_CLASSIFICATION = ("Object Classification (from prediction image)",
                         "Object Classification (from binary image)",
                         "Object Classification (from label image)",
                         "Object Classification (from pixel classification)")
TRACKING = ("Automatic Tracking Workflow (Conservation Tracking) from binary image",
            "Automatic Tracking Workflow (Conservation Tracking) from prediction image",
            "Structured Learning Tracking Workflow from binary image",
            "Structured Learning Tracking Workflow from prediction image")

# workflowName → the module of hpc_ilastik.project with its reader, and the reader's name there
READERS: dict[str, tuple[str, str]] = {
    PIXEL_CLASSIFICATION: ("pixel_classification", "read_pixel_classification"),
    AUTOCONTEXT: ("pixel_classification", "read_pixel_classification"),
    **{name: ("object_classification", "read_object_classification") for name in OBJECT_CLASSIFICATION},
    COUNTING: ("counting", "read_counting"),
    MULTICUT: ("multicut", "read_multicut"),
    **{name: ("tracking", "read_tracking") for name in TRACKING},
}
