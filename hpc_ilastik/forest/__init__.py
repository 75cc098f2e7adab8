"""Random forests as ilastik uses them: vigra RF2 forests (read, written, converted from scikit-learn),
their numba predictor, and ilastik's classifier of several forests (`ForestEnsemble`); scikit-learn
regression forests read from pickles without unpickling (`regression`, Cell Density Counting). Every
workflow that classifies or regresses (pixels, objects, edges, densities) predicts through here.

May import `hpc_ilastik.errors` and `hpc_ilastik.io` (and h5py for the forests' own HDF5 layout).
"""
