"""Training what resdsl compiles: datasets (data.py), the loop (loop.py), one epoch of it and its
test pass (epoch.py), the run directory (rundir.py) and the training state saved in it (state.py),
and the paper's error curves (plot.py)."""
