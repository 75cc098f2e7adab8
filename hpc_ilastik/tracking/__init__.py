"""Tracking on arrays: the traxel filter, hytra's hypotheses graph (nearest neighbours, tracklets), the
conservation-tracking energies with convexified costs, an exact integer program and a dpct-style flow solver,
Gaussian-mixture merger resolution and ilastik's lineage and track ids.

Facts come from hytra (`hytra/core/hypothesesgraph.py`, `ilastikhypothesesgraph.py`, `jsongraph.py`,
`fieldofview.py`, `mergerresolver.py`, `ilastikmergerresolver.py`, `plugins/merger_resolver/gmm_merger_resolver.py`),
dpct (`src/flowgraph.cpp`, `src/residualgraph.cpp`, `python/pythongraphreader.cpp`), multiHypothesesTracking
(`src/segmentationhypothesis.cpp`, the ILP's constraints) and ilastik's
`ilastik/applets/tracking/conservation/opConservationTracking.py`.

Modules: `hypotheses` (traxels, filter, graph, tracklets), `energies` (features, convexify), `problem` (weighted
costs, constraints, energy, feasibility), `solver_ilp` (exact, HiGHS), `solver_flow` (dpct-style, numba), `solve`
(choice by size, the chain of `OpConservationTracking.track`), `mergers` (Gaussian-mixture splitting and
re-linking), `lineage` (the solved graph, track and lineage ids).

May import `hpc_ilastik.errors`, `hpc_ilastik.forest`, `hpc_ilastik.pixel`, `hpc_ilastik.objects` and the block
grid of `hpc_ilastik.run.blocks` (not `graphs`, which sits on the same level); never files, MPI or the command
line.
Features, classifier outputs and pixel coordinates come in as arrays from the caller.
"""
