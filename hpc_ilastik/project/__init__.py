"""ilastik projects (`.ilp`, HDF5), read-only and never unpickled: what every project holds (`common`),
one module per workflow's own groups, `reader.open_project` that dispatches on the stored workflow name,
and the writer of Pixel Classification projects (`writer`).

Turns stored groups into the domain objects (feature selections, forests, label blocks); may import
the domains (`pixel`, `forest`, ...), `io` and `errors`, never `workflows` or the command line.
"""
