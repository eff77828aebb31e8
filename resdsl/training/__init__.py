"""Training what resdsl compiles: datasets (data.py), the loop and its run directory (loop.py),
and the paper's error curves (plot.py)."""
