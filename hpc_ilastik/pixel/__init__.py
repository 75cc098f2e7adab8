"""Pixel features and the pixel pipeline, pure numpy/numba on arrays: fastfilters' Gaussian kernels,
the separable filter banks, ilastik's feature bank, a block (with halo) of raw data → features →
probabilities → the pixel export sources, and the training of pixel classifiers.

May import `hpc_ilastik.errors`, `hpc_ilastik.forest` and the block grid of `hpc_ilastik.run.blocks`;
never files, MPI or the command line.
"""
