"""On-demand benchmarks (``make bench``); never collected by the default pytest run."""
