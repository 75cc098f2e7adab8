"""The `hpc-ilastik` command: the console script and `python -m hpc_ilastik`."""

from hpc_ilastik.run.process import start_without_collecting


def main() -> None:
    """Start without the garbage collector (`run.process`), then run the command line."""
    start_without_collecting()
    from hpc_ilastik.cli import run

    run()


if __name__ == "__main__":
    main()
