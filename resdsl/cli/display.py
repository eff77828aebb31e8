"""What the commands draw on a terminal: tables (summary, bench) and live progress (train, tune),
each with the plain text it falls back to where stdout or stderr is a pipe or a file.

rich is imported inside the functions that draw: `check` and `list` never pay for it.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def summary_table(title: str, columns: tuple[str, ...], numeric, table: list[list[str]], outputs: str,
                  memory: list[str]) -> None:
    """The summary: a rich table on a wide enough terminal, else plain aligned text, nothing cut."""
    from rich.console import Console
    from rich.table import Table
    console = Console()
    widths = [max(len(column), *(len(row[i]) for row in table)) for i, column in enumerate(columns)]
    widths[0] = min(widths[0], 24)  # in a terminal a long name folds onto a second line, never cut
    if not sys.stdout.isatty() or sum(widths) + 3 * len(widths) + 1 > console.width:
        from ..summary import plain_table
        # a pipe, a file, or a terminal too narrow for the table: plain aligned text, nothing cut
        print("\n".join([title, *plain_table(table), f"outputs: {outputs}", *memory]))
        return
    rich_table = Table(title=title, title_justify="left", caption=f"outputs: {outputs}",
                       caption_justify="left")
    for column, width in zip(columns, widths):
        rich_table.add_column(column, justify="right" if column in numeric else "left", overflow="fold",
                              no_wrap=column != "layer", min_width=width)
    for row in table:
        rich_table.add_row(*row)
    console.print(rich_table)
    console.print("\n".join(memory), highlight=False)


def bench_table(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title, title_justify="left")
    for column in ("engine", "median ms", "min–max ms", "runs", "images/s", "× ONNX Runtime", "max rel. error"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for row in rows:
        if row["median_ms"] is None:
            table.add_row(row["engine"], "-", "-", "-", "-", "-", row["note"])
            continue
        table.add_row(row["engine"], f"{row['median_ms']:.2f}", f"{row['min_ms']:.2f}–{row['max_ms']:.2f}",
                      str(row["runs"]), f"{row['images_per_s']:.1f}",
                      f"{row['vs_onnxruntime']:.2f}" if row["vs_onnxruntime"] else "-", f"{row['rel_err']:.1e}")
    Console().print(table)


@contextmanager
def training_display(name: str, epochs: int):
    """A live bar (epoch, loss, images/s, time left) on a terminal; epoch lines otherwise."""
    if not sys.stderr.isatty():
        yield (lambda *a: None), (lambda row: None)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(f"training {name}", total=epochs, info="")

        def on_batch(epoch: int, i: int, loss: float) -> None:
            bar.update(task, info=f"epoch {epoch}, batch {i}, loss {loss:.3f}")

        def on_epoch(row: dict) -> None:
            bar.update(task, completed=row["epoch"],
                       info=f"test error {100 * row['test_error']:.2f}%, {row['images_per_s']:.0f} images/s")
        yield on_batch, on_epoch


def tuning_display(name: str, target: str):
    """Trials done, tasks, best latency so far, time left: a rich bar on a terminal, else log lines."""
    if not sys.stderr.isatty():
        return tuning_log(name, target)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    @contextmanager
    def display():
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("trials · {task.fields[tasks]} tasks · best {task.fields[best]}"),
                   TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
        with Progress(*columns, transient=False, refresh_per_second=2) as bar:
            task = bar.add_task(f"tuning {name} ({target})", total=None, tasks="?", best="-")

            def show(p) -> None:
                best = f"{p.best_ms:.2f} ms" if p.best_ms is not None else "-"
                bar.update(task, description=f"{p.stage} {name} ({target})", total=p.total,
                           completed=min(p.done, p.total), tasks=p.tasks, best=best)
            yield show
    return display()


LOG_EVERY_S = 60.0


@contextmanager
def tuning_log(name: str, target: str):
    """For a tuning run in the background (`nohup ... > log`), where a live bar never draws:
    a line at every change of stage, and one a minute while it searches."""
    state: dict = {}

    def line(p) -> str:
        elapsed = time.monotonic() - p.started
        text = (f"{p.stage} {name} ({target}): {min(p.done, p.total)}/{p.total} trials, {p.tasks} tasks, "
                f"best {f'{p.best_ms:.2f} ms' if p.best_ms is not None else '-'}, "
                f"{int(elapsed // 60)}:{int(elapsed % 60):02d} elapsed")
        first = state.setdefault("first", (p.done, time.monotonic()))
        rate = (p.done - first[0]) / max(time.monotonic() - first[1], 1e-9)
        if p.stage == "tuning" and rate > 0 and p.done < p.total:
            text += f", ~{(p.total - p.done) / rate / 60:.0f} min left ({rate:.2f} trials/s)"
        return text

    def say(p) -> None:
        text = line(p)
        if text != state.get("said"):
            print(text, file=sys.stderr, flush=True)
        state.update(stage=p.stage, at=time.monotonic(), said=text)

    def show(p) -> None:
        if p.stage != state.get("stage") or time.monotonic() - state["at"] >= LOG_EVERY_S:
            say(p)
        state["latest"] = p
    yield show
    if "latest" in state:
        say(state["latest"])  # where it ended
