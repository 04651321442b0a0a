"""Query commands: compare, plot, export."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from actdb.cli._common import Format, app, emit, open_store, usage_error
from actdb.errors import InvalidInput

StoreArg = Annotated[Path, typer.Argument(help="Path of the store directory.")]
MeasureOpt = Annotated[list[str] | None, typer.Option("--measure", "-m", help="Measure name; repeat for several "
                                                          "(they share one pass). Default: linear_cka. Measures: "
                                                          "linear_cka, debiased_cka, rbf_cka, mean_cca, svcca, pwcca, "
                                                          "procrustes, linear_regression, gulp, rsa, knn_overlap, "
                                                          "stitching (runs model B on A's mapped hidden.i: "
                                                          "B's loss penalty; see the README's Measures).")]
AOpt = Annotated[str, typer.Option("--a", help="Selection A, e.g. 'model=x,checkpoint=step*,site=hidden.*'. "
                                   "Values: globs, a|b lists, a:b ranges for layer/step.")]
BOpt = Annotated[str | None, typer.Option("--b", help="Selection B (default: A itself).")]
SubsetOpt = Annotated[str | None, typer.Option("--subset", help="SQL predicate over token/example columns, "
                                                  "e.g. \"label = 'pos' AND position > 0\".")]
AlignOpt = Annotated[str | None, typer.Option("--align", help="example:mean | example:first | example:last | "
                                                 "word (reps with different tokenizers).")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="Measure parameter key=value "
                                                        "(JSON value), e.g. --param k=20; repeatable.")]


TABLE_COLUMNS = ["measure", "value", "n", "model_a", "checkpoint_a", "site_a", "model_b", "checkpoint_b", "site_b",
                 "cached"]


def with_objective(shown: Any, full: Any) -> Any:
    """Add an ``objective`` column (what a stitching value measures, from its parameters)
    to the table shown when any row is a stitching value."""
    import json

    import pyarrow as pa

    measures = full.column("measure").to_pylist()
    if "stitching" not in measures or "params" not in full.column_names:
        return shown
    objective = [json.loads(p).get("objective") if m == "stitching" and p else None
                 for m, p in zip(measures, full.column("params").to_pylist())]
    return shown.add_column(2, "objective", pa.array(objective, pa.string()))


class PlotKind(StrEnum):
    heatmap = "heatmap"
    trajectory = "trajectory"
    grid = "grid"
    probe = "probe"


class ExportFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


def _selection(db: Any, text: str | None, option: str) -> Any:
    from actdb.api._params import parse_selection

    try:
        return db.reps(**parse_selection(text or "", side=option))
    except InvalidInput as exc:
        raise usage_error(f"{option} {text!r}: {exc}") from None


def _plan(db: Any, a: Any, b: Any, measures: list[str] | None, pairs: str, subset: str | None,
          align: str | None, params: list[str] | None, stderr: bool = False, reference: str | None = None,
          include_reference: bool = False) -> Any:
    """A comparison plan; ``a``/``b`` are filter strings or already-built selections."""
    from actdb.api._params import parse_measure_params, parse_param_option

    chosen = measures or ["linear_cka"]
    try:
        given = parse_measure_params(chosen, parse_param_option(params or []))
    except InvalidInput as exc:
        raise usage_error(str(exc)) from None
    sel_a = a if not isinstance(a, str) else _selection(db, a, "--a")
    sel_b = b if b is None or not isinstance(b, str) else _selection(db, b, "--b")
    return sel_a.compare(sel_b, measure=chosen, pairs=pairs, subset=subset, align=align, stderr=stderr,
                         reference=reference, include_reference=include_reference, **given)


def _compute(plan: Any) -> Any:
    """Compute with a spinner on an interactive terminal (stderr), silently otherwise."""
    status: Any = nullcontext()
    if sys.stderr.isatty():
        from rich.console import Console

        status = Console(stderr=True).status(f"computing {len(plan.tasks())} value(s) ...")
    with status:
        return plan.compute()


@app.command()
def compare(store: StoreArg, a: AOpt = "", b: BOpt = None, measure: MeasureOpt = None,
            pairs: Annotated[str, typer.Option(help="all | same_layer | zip | consecutive | "
                                               "to_reference[:NAME]")] = "all",
            reference: Annotated[str | None, typer.Option(
                "--reference", help="to_reference: the checkpoint every other one is compared to (default: "
                "the model's checkpoint named final, else its highest step).")] = None,
            subset: SubsetOpt = None, align: AlignOpt = None, param: ParamOpt = None,
            fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
            output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE.")] = None,
            explain: Annotated[bool, typer.Option("--explain", help="Show what would be read and computed "
                                                  "(reads no array), then stop.")] = False,
            stderr: Annotated[bool, typer.Option("--stderr", help="Add a jackknife standard error over 20 row "
                                                 "shards (moments-route measures).")] = False) -> None:
    """Compare two selections of reps with one or more measures (results are cached).

    Example: actdb compare ./mystore --measure linear_cka --a 'model=pythia-70m,checkpoint=step*'
    --b 'checkpoint=final' --pairs same_layer
    """
    db = open_store(store, read_only=explain)
    plan = _plan(db, a, b, measure, pairs, subset, align, param, stderr, reference)
    if explain:
        typer.echo(plan.explain(show=False))
        return
    result = _compute(plan)
    table = result.to_arrow()
    if fmt == Format.table and table.num_rows:  # a readable subset; csv/json/parquet carry every column
        table = with_objective(table.select(TABLE_COLUMNS[:2] + (["stderr"] if stderr else []) + TABLE_COLUMNS[2:]),
                               table)
    emit(table, fmt, output, title=f"{', '.join(plan.measures)} ({len(result)} values)")


@app.command()
def plot(store: StoreArg,
         kind: Annotated[PlotKind, typer.Argument(help="heatmap (site x site of A vs B) | trajectory (measure vs "
                                                  "step, one line per layer) | grid (one heatmap per checkpoint) | "
                                                  "probe (probe accuracy by layer or step; --label, --method)")],
         output: Annotated[Path, typer.Option("--output", "-o", help="Image file: .png or .svg.")],
         a: AOpt = "", b: BOpt = None,
         measure: Annotated[str, typer.Option("--measure", "-m", help="Measure name.")] = "linear_cka",
         reference: Annotated[str | None, typer.Option(
             help="trajectory: the checkpoint every other one is compared to (default: the model's "
             "checkpoint named final, else its highest step); drawn at its own step.")] = None,
         label: Annotated[str, typer.Option(help="probe: the example column to decode (label or split).")
                          ] = "label",
         method: Annotated[str, typer.Option(help="probe: ridge (streaming, all rows) | logistic (scikit-learn, "
                                             "a row sample).")] = "ridge",
         folds: Annotated[int, typer.Option(help="probe: cross-validation folds (of examples).")] = 5,
         by: Annotated[str, typer.Option(help="probe: x axis, layer (a line per checkpoint) or step (a line per "
                                         "layer).")] = "layer",
         subset: SubsetOpt = None, align: AlignOpt = None, param: ParamOpt = None,
         title: Annotated[str | None, typer.Option(help="Figure title (default: measure and n).")] = None,
         stderr: Annotated[bool, typer.Option("--stderr", help="Add jackknife standard errors (moments-route "
                                              "measures): a band of value ± stderr around each trajectory "
                                              "line, ± stderr in annotated heatmap cells.")] = False) -> None:
    """Plot a comparison as PNG or SVG: heatmap, trajectory or grid; or probe accuracies (probe).

    Example: actdb plot ./mystore trajectory --a 'model=pythia-70m' --reference final -o trajectory.png
    Example: actdb plot ./mystore probe --a 'model=pythia-70m,site=hidden.*' --label label --by step -o probe.png
    """
    from actdb import plots

    if output.suffix.lower() not in (".png", ".svg"):
        raise usage_error(f"-o {str(output)!r}: name the image .png or .svg")
    db = open_store(store, read_only=False)
    if kind == PlotKind.probe:
        found = _selection(db, a, "--a").probe(label=label, method=method, folds=folds, subset=subset)
        fig = plots.probe(found, by=by, title=title)
    elif kind == PlotKind.heatmap:
        rows = _compute(_plan(db, a, b, [measure], "all", subset, align, param, stderr)).rows
        fig = plots.heatmap(rows, measure=measure, title=title, show_stderr=stderr)
    elif kind == PlotKind.trajectory:
        if b is not None:
            raise usage_error("trajectory compares each checkpoint of --a to --reference; --b is not used")
        plan = _plan(db, a, None, [measure], "to_reference", subset, align, param, stderr, reference=reference,
                     include_reference=True)
        fig = plots.trajectory(_compute(plan).rows, measure=measure, title=title)
    else:
        sel_a = _selection(db, a, "--a")
        sel_b = None if b is None else _selection(db, b, "--b")
        checkpoints = list(dict.fromkeys((r.model, r.checkpoint) for r in sel_a))
        if not checkpoints:
            raise InvalidInput(f"--a {a!r} selects no reps; see `actdb ls {store} reps`")
        rows = []
        for model, checkpoint in checkpoints:  # one heatmap per checkpoint: A's sites vs B's, at that checkpoint
            side_a = sel_a.filter(model=model, checkpoint=checkpoint)
            side_b = (sel_a if sel_b is None else sel_b).filter(model=model, checkpoint=checkpoint)
            rows += _compute(_plan(db, side_a, side_b, [measure], "all", subset, align, param, stderr)).rows
        fig = plots.grid(rows, measure=measure, title=title, show_stderr=stderr)
    plots.save(fig, output)
    typer.echo(f"wrote {output}")


@app.command()
def export(store: StoreArg,
           to: Annotated[Path, typer.Option("--to", help="Directory to write the files into.")],
           fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="File format.")] = ExportFormat.parquet,
           view: Annotated[list[str] | None, typer.Option("--view", help="Only these views (repeatable); "
                                                            "default: dissimilarities, reps, models, "
                                                            "checkpoints.")] = None) -> None:
    """Export the flat views as Parquet or CSV files plus schema.json, for BI tools.

    Example: actdb export ./mystore --to ./bi --format csv
    """
    from actdb.export import DEFAULT_VIEWS, export_views

    db = open_store(store)
    report = export_views(db, to, fmt=fmt.value, views=tuple(view or DEFAULT_VIEWS))
    for name, path in report.files.items():
        typer.echo(f"{path}  ({report.rows[name]} rows)")
    typer.echo(f"{report.schema_file}  (column names, types and descriptions)")
