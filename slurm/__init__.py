"""submitit launching of whole suites on Slurm (``bench submit``; not built yet)."""
