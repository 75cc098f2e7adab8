from hpc_ilastik.cli import main

raise SystemExit(main())
