"""Where a sweep's runs execute: ``local`` (this machine, ``bench.sweep.run_sweep``) or ``slurm`` (one
SLURM job array, ``bench.launchers.slurm``)."""

LAUNCHERS = ("local", "slurm")
