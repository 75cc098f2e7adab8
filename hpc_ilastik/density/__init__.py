"""Cell Density Counting's own steps, pure functions on numpy arrays: the training targets ilastik makes
from dot and brush labels and its four regressors (`training`), and the density of a block of pixel
features with the count summed as ilastik sums it (`estimate`).

May import `hpc_ilastik.errors`, `hpc_ilastik.forest` and `hpc_ilastik.pixel` (features and filters).
"""
