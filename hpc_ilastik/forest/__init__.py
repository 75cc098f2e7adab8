"""Random forests as ilastik uses them: vigra RF2 forests (read, written, converted from scikit-learn),
their numba predictor, and ilastik's classifier of several forests (`ForestEnsemble`). Every workflow
that classifies (pixels, objects, edges) predicts through here.

May import `hpc_ilastik.errors` only (and h5py for the forests' own HDF5 layout).
"""
