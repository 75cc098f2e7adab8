from hpc_ilastik.cli import run

run()
