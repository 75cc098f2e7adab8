"""Files and formats: opening inputs lazily (HDF5, N5, zarr/OME-Zarr, TIFF, images, numpy) as tzyxc
`Source`s, axis strings, our N5 layer, the output formats and their writers, output file names, and
ilastik's export conversions (cut-out, dtype, value range, axis order) and resumable-output attributes.

Nothing here knows about classifiers, workflows or MPI: it may import only `hpc_ilastik.errors`, its
own modules and file-format libraries. Writers that several processes share take a `Ranks` object
(`io.streaming.Ranks`), which the run layer implements over MPI.
"""
