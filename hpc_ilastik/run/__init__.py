"""Running work: the block grid (pure geometry, tzyxc), the engine that hands blocks or files to threads
and MPI ranks (the one place that imports mpi4py), progress lines, and how a process starts and ends.

Imports only `hpc_ilastik.errors`; the domains use the block grid, the workflows use the engine.
"""
