"""hpc-ilastik: run trained ilastik projects headless, on one core or across MPI ranks."""

__version__ = "0.1.0"
