"""Objects in label images, pure numpy/numba on arrays: thresholding and connected components, vigra's
region accumulators (ilastik's "Standard Object Features", with their "in neighborhood" variants), the
convex hull and skeleton features, the feature matrix an object classifier sees, and the merge of
per-block object tables into the objects of a whole image.

May import `hpc_ilastik.errors`, `hpc_ilastik.forest`, `hpc_ilastik.pixel` (its filters) and the block
grid of `hpc_ilastik.run.blocks`; never files, MPI or the command line.
"""
