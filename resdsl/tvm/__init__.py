"""Everything Apache TVM: the Relax lowering, builds, tuning, selection and the shipped databases.

    target.py          TVM targets; the machine a record's times belong to
    lowering.py        how a graph becomes Relax (layout, Winograd, prepacked weights)
    relax_frontend.py  graph -> Relax, one converter per op; winograd.py, its F(m, 3) kernels
    build.py           fused kernels, tuned schedules applied, the shared library
    workdir.py         a tuning work directory: the one owner of its on-disk format
    records.py         MetaSchedule's two files checked line by line before TVM reads them: each
                       line's shape (record_lines.py), then TVM's reading in a child (record_reading.py)
    tuning.py          `tune_network`: search, select, build, time, report
    search.py          the resumable search: seed, tune until the budget is measured, select
    measuring.py       how a candidate is built and timed (builder, runner, RPC, intrinsics)
    tasks.py           a network's tasks, what the database says of each, who gets the next trials
    reuse.py           seeding from other work directories' records of the same kernels
    selection.py       each kernel's schedule chosen by re-timing its best records cold
    report.py          `TuneReport`, what a tuning run writes and `bench` ranks by
    databases.py       the databases shipped as package data, and which one a build uses
    engine.py          `bench`'s TVM rows

`tvm` itself is imported lazily inside functions: it takes seconds to import.
"""
