"""Boundary-based segmentation on arrays: distance-transform watershed superpixels, the region adjacency
graph of a label image with its edge and superpixel features (ilastikrag's), and multicut solvers.

May import `hpc_ilastik.errors`, `hpc_ilastik.forest`, `hpc_ilastik.pixel` (its filters),
`hpc_ilastik.objects` (labelling, accumulators) and the block grid of `hpc_ilastik.run.blocks`; never
files, MPI or the command line.
"""
