"""asv timing suite of the OT solvers (``benchmark_dir`` of ``asv.conf.json``)."""
