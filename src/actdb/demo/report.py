"""The demo's report: ``STORE/report/index.html`` + PNGs + ``summary.json``.

Every table in the report is the result of the SQL printed above it, run against the
store (``db.sql``), so ``actdb sql STORE "<that query>"`` shows the same numbers. Plots
come from the comparison rows (the Python shown under each). The readings are sentences
assembled from this run's numbers; nothing in them is fixed text about the outcome.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actdb import plots
from actdb.demo.study import DOCS, MINILM, SHIFTED, Study, model_name


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.4f}"
    return "" if v is None else str(v)


@dataclass
class Section:
    key: str
    title: str
    readings: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    sql: str | None = None
    table: list[dict[str, Any]] = field(default_factory=list)
    python: str = ""
    note: str = ""


@dataclass
class Report:
    index: Path
    summary_json: Path
    headlines: list[str]
    queries: list[tuple[str, str]]
    summary: dict[str, Any]

    def finish(self, seconds: float, reused: bool) -> None:
        self.summary["seconds"] = round(seconds, 2)
        self.summary["reused"] = reused
        self.summary_json.write_text(json.dumps(self.summary, indent=1, default=str))


# ------------------------------------------------------------------ SQL text
def cka_sql(model_a: str, ck_a: str | None, model_b: str, ck_b: str | None, *, dataset: str = DOCS,
            pooling: str = "token", same_site: bool = False, columns: str = "layer_a, layer_b, value") -> str:
    where = ["measure = 'linear_cka'", f"dataset = {_q(dataset)}", f"model_a = {_q(model_a)}",
             f"model_b = {_q(model_b)}"]
    if ck_a:
        where.append(f"checkpoint_a = {_q(ck_a)}")
    if ck_b:
        where.append(f"checkpoint_b = {_q(ck_b)}")
    where += [f"pooling_a = {_q(pooling)}", f"pooling_b = {_q(pooling)}", "subset IS NULL"]
    if same_site:
        where.append("site_a = site_b")
    order = "step_a, layer_a" if "step_a" in columns else "layer_a, layer_b"
    return f"SELECT {columns}\nFROM dissimilarities\nWHERE " + "\n  AND ".join(where) + f"\nORDER BY {order}"


def stitch_sql(model_a: str, model_b: str, dataset: str) -> str:
    """Both directions per layer, with each receiving model's own held-out loss."""
    return (f"SELECT layer_a AS layer, model_a || ' -> ' || model_b AS direction, value AS penalty,\n"
            f"       CAST(json_extract(extra, '$.stitched_loss') AS DOUBLE) AS stitched_loss,\n"
            f"       CAST(json_extract(extra, '$.own_loss') AS DOUBLE) AS own_loss_of_b\n"
            f"FROM dissimilarities\nWHERE measure = 'stitching' AND dataset = {_q(dataset)}\n"
            f"  AND ((model_a = {_q(model_a)} AND model_b = {_q(model_b)})\n"
            f"    OR (model_a = {_q(model_b)} AND model_b = {_q(model_a)}))\n"
            f"  AND site_a = site_b\nORDER BY layer, direction")


# ------------------------------------------------------------------ readings
def _by_layer(rows: Sequence[dict[str, Any]]) -> dict[int, float]:
    return {int(r["layer_a"]): float(r["value"]) for r in rows}


def read_heatmap(model: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    m = {(int(r["layer_a"]), int(r["layer_b"])): float(r["value"]) for r in rows}
    L = max(a for a, _ in m)
    adjacent = [m[(i, i + 1)] for i in range(L) if (i, i + 1) in m]
    low = min(m, key=lambda k: m[k])
    out = [f"In {model}, neighbouring layers have linear CKA {min(adjacent):.2f} to {max(adjacent):.2f} "
           f"(mean {sum(adjacent) / len(adjacent):.2f}); the least similar pair is hidden.{low[0]} vs "
           f"hidden.{low[1]} at {m[low]:.2f}."]
    if (0, L) in m:
        out.append(f"The embeddings (hidden.0) and the last block's output (hidden.{L}) share CKA {m[(0, L)]:.2f}: "
                   + ("the residual stream stays close to its input." if m[(0, L)] >= 0.7 else
                      "the stack transforms its input substantially." if m[(0, L)] < 0.4 else
                      "the stack changes its input partly."))
    return out


def read_trajectory(model: str, rows: Sequence[dict[str, Any]], final_step: int) -> list[str]:
    per: dict[int, list[tuple[int, float]]] = {}
    for r in rows:
        per.setdefault(int(r["layer_a"]), []).append((int(r["step_a"]), float(r["value"])))
    reach: dict[int, int | None] = {}
    for layer, pts in sorted(per.items()):
        pts.sort()
        reach[layer] = next((s for s, v in pts if v >= 0.9 and s < final_step), None)
    first_steps = sorted({s for pts in per.values() for s, _ in pts})
    early = first_steps[1] if len(first_steps) > 2 else first_steps[0]
    at_early = {layer: dict(pts)[early] for layer, pts in per.items() if early in dict(pts)}
    parts = [f"hidden.{k}: " + (f"step {v}" if v is not None else f"only at the end (step {final_step})")
             for k, v in reach.items()]
    out = [f"In {model}, the first checkpoint whose layer reaches CKA ≥ 0.90 to the final one: "
           + "; ".join(parts) + "."]
    if at_early:
        hi = max(at_early, key=lambda k: at_early[k])
        lo = min(at_early, key=lambda k: at_early[k])
        out.append(f"At step {early}, hidden.{hi} is already at {at_early[hi]:.2f} while hidden.{lo} is at "
                   f"{at_early[lo]:.2f}" + (": lower layers settle first." if hi < lo else
                                             ": higher layers settle first." if hi > lo else "."))
    return out


def read_cross(a: str, b: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    m = {(int(r["layer_a"]), int(r["layer_b"])): float(r["value"]) for r in rows}
    la = sorted({k[0] for k in m})
    best = {i: max((k for k in m if k[0] == i), key=lambda k: m[k])[1] for i in la}
    diag = [m[(i, i)] for i in la if (i, i) in m]
    matched = sum(best[i] == i for i in la)
    out = [f"Matched layers of {a} and {b} have CKA {min(diag):.2f} to {max(diag):.2f} (mean "
           f"{sum(diag) / len(diag):.2f})." if diag else f"{a} and {b} have no matched layers."]
    out.append(f"For {matched} of {len(la)} layers of {a}, the most similar layer of {b} is the same depth; "
               + ", ".join(f"hidden.{i}→hidden.{best[i]}" for i in la) + ".")
    return out


def read_stitch(pairs: dict[str, list[dict[str, Any]]], names: tuple[str, str],
                sql_rows: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    a, b = names
    ab, ba = pairs[f"{a}->{b}"], pairs[f"{b}->{a}"]
    pab, pba = _by_layer(ab), _by_layer(ba)
    own: dict[str, float] = {}
    for r in sql_rows:  # direction 'A -> B', own_loss_of_b: the receiving model's own held-out loss
        own[str(r["direction"]).split(" -> ")[1]] = float(r["own_loss_of_b"])
    layers = sorted(set(pab) & set(pba))
    more = [i for i in layers if pab[i] > pba[i]]
    mean_ab = sum(pab[i] for i in layers) / len(layers)
    mean_ba = sum(pba[i] for i in layers) / len(layers)
    out = [f"Stitching {a} into {b} costs {mean_ab:.3f} nats/token on average over layers {layers[0]}–{layers[-1]}; "
           f"{b} into {a} costs {mean_ba:.3f}. {a}→{b} is the costlier direction at {len(more)} of {len(layers)} "
           "layers" + (f" ({', '.join(f'hidden.{i}' for i in more)})." if more else ".")]
    out.append(f"For scale: held-out next-token loss of {b} is {own.get(b, math.nan):.3f} and of {a} "
               f"{own.get(a, math.nan):.3f} nats/token, so the largest penalty "
               f"({max(max(pab.values()), max(pba.values())):.3f}) is "
               f"{100 * max(max(pab.values()), max(pba.values())) / max(1e-9, min(own.values())):.1f}% "
               "of the smaller own loss.")
    return out, {"mean_" + a + "->" + b: mean_ab, "mean_" + b + "->" + a: mean_ba, "own_loss": own}


def _extra(row: dict[str, Any]) -> dict[str, Any]:
    e = row.get("extra")
    return dict(json.loads(e)) if isinstance(e, str) else dict(e or {})


# -------------------------------------------------------------------- figures
def _save(fig: Any, folder: Path, name: str) -> str:
    plots.save(fig, folder / name, dpi=100)
    return name


def _lines(title: str, ylabel: str, series: dict[str, dict[int, float]], *, hline: float | None = None,
           note: str | None = None) -> Any:
    fig = plots.new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    for label, pts in series.items():
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", linewidth=1.6, label=label)
    if hline is not None:
        ax.axhline(hline, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("layer (hidden.N)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    xs = sorted({x for pts in series.values() for x in pts})
    ax.set_xticks(xs)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if note:
        ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=7, color="dimgrey")
    return fig


# ---------------------------------------------------------------------- report
def _sql_rows(db: Any, sql: str) -> list[dict[str, Any]]:
    return list(db.sql(sql).to_pylist())


def write_report(db: Any, study: Study) -> Report:
    folder = study.store / "report"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = study.config
    R = study.results
    small, large = cfg.widths
    gelu, solu, gelu_s = model_name("gelu", large), model_name("solu", large), model_name("gelu", small)
    fin = study.final
    final_step = cfg.steps
    store = str(study.store)
    sections: list[Section] = []
    headlines: list[str] = []
    checks: list[dict[str, Any]] = []
    py_open = f"import actdb, actdb.plots as plots\ndb = actdb.open({store!r})\n"

    def check(name: str, sql: str) -> None:
        rows = _sql_rows(db, sql)
        if rows:
            checks.append({"name": name, "sql": sql, "value": next(iter(rows[0].values()))})

    # 1. heatmaps
    for m in [*study.lms, MINILM]:
        rows = R[f"heatmap:{m}"]
        ck = fin.get(m)
        sec = Section(f"heatmap-{m}", f"Layer × layer linear CKA: {m}" + (f" ({ck})" if ck else " (pretrained)"))
        sec.readings = read_heatmap(m, rows)
        sec.images.append(_save(plots.heatmap(rows, title=f"{m}: linear CKA, layer × layer"), folder,
                                f"heatmap-{m}.png"))
        sec.sql = cka_sql(m, ck, m, ck, columns="layer_a, layer_b, value")
        sec.python = (py_open + f"sel = db.reps(model={m!r}" + (f", checkpoint={ck!r}" if ck else "")
                      + f", dataset={DOCS!r}, pooling='token')\n"
                      "res = sel.compare(sel, pairs='all').compute()\n"
                      f"plots.save(plots.heatmap(res), 'heatmap-{m}.png')")
        if m == gelu:
            sec.table = _sql_rows(db, sec.sql)
        sections.append(sec)
    check("cka gelu final hidden.0 vs last", cka_sql(gelu, fin[gelu], gelu, fin[gelu], columns="value")
          .replace("ORDER BY layer_a, layer_b", f"  AND layer_a = 0 AND layer_b = {cfg.layers}"))

    # 2. trajectories
    for m in study.lms:
        rows = [r for r in R[f"trajectory:{m}"] if r["site_a"] == r["site_b"]]
        sec = Section(f"trajectory-{m}", f"Training trajectory: each layer's CKA to the final checkpoint, {m}")
        sec.readings = read_trajectory(m, rows, final_step)
        sec.images.append(_save(plots.trajectory(rows, title=f"{m}: CKA to {fin[m]} by layer"), folder,
                                f"trajectory-{m}.png"))
        sec.sql = cka_sql(m, None, m, fin[m], same_site=True, columns="step_a AS step, layer_a AS layer, value")
        sec.python = (py_open + f"sel = db.reps(model={m!r}, dataset={DOCS!r}, pooling='token')\n"
                      f"res = sel.compare(pairs='to_reference:{fin[m]}').compute()\n"
                      f"plots.save(plots.trajectory(res), 'trajectory-{m}.png')")
        if m == gelu:
            sec.table = _sql_rows(db, sec.sql)
            headlines.append(sec.readings[0])
        sections.append(sec)
    check("trajectory gelu step-1 last layer",
          cka_sql(gelu, None, gelu, fin[gelu], same_site=True, columns="value")
          .replace("ORDER BY layer_a, layer_b", f"  AND step_a = {study.steps[1]} AND layer_a = {cfg.layers}"))

    # 3. GeLU vs SoLU
    rows = R["gelu_vs_solu"]
    sec = Section("gelu-vs-solu", f"GeLU vs SoLU, layer × layer ({gelu} vs {solu}, final checkpoints)")
    sec.readings = read_cross(gelu, solu, rows)
    headlines.append(sec.readings[0])
    sec.images.append(_save(plots.heatmap(rows, title=f"{gelu} (rows) vs {solu} (columns): linear CKA"), folder,
                            "gelu-vs-solu.png"))
    sec.sql = cka_sql(gelu, fin[gelu], solu, fin[solu])
    sec.table = _sql_rows(db, sec.sql)
    sec.python = (py_open
                  + f"a = db.reps(model={gelu!r}, checkpoint={fin[gelu]!r}, dataset={DOCS!r}, pooling='token')\n"
                  f"b = db.reps(model={solu!r}, checkpoint={fin[solu]!r}, dataset={DOCS!r}, pooling='token')\n"
                  "plots.save(plots.heatmap(a.compare(b, pairs='all').compute()), 'gelu-vs-solu.png')")
    sections.append(sec)
    check("cka gelu vs solu last layer", sec.sql.replace(
        "ORDER BY layer_a, layer_b", f"  AND layer_a = {cfg.layers} AND layer_b = {cfg.layers}")
        .replace("SELECT layer_a, layer_b, value", "SELECT value"))

    # 4. width family
    sec = Section("width", f"Width family: matched-layer CKA, width {small} vs width {large}")
    series = {f"{gelu_s} vs {gelu}": _by_layer(R["width"])}
    if "width_solu" in R:
        series[f"{model_name('solu', small)} vs {solu}"] = _by_layer(R["width_solu"])
    for label, pts in series.items():
        lo = min(pts, key=lambda k: pts[k])
        sec.readings.append(f"{label}: matched layers have CKA {min(pts.values()):.2f} to {max(pts.values()):.2f}; "
                            f"the widths differ most at hidden.{lo}.")
    sec.images.append(_save(_lines("Matched-layer linear CKA across widths", "linear CKA", series), folder,
                            "width.png"))
    sec.sql = cka_sql(gelu_s, fin[gelu_s], gelu, fin[gelu], same_site=True, columns="layer_a AS layer, value")
    sec.table = _sql_rows(db, sec.sql)
    sec.python = (py_open
                  + f"a = db.reps(model={gelu_s!r}, checkpoint={fin[gelu_s]!r}, dataset={DOCS!r}, pooling='token')\n"
                  f"b = db.reps(model={gelu!r}, checkpoint={fin[gelu]!r}, dataset={DOCS!r}, pooling='token')\n"
                  "print(a.compare(b, pairs='same_layer').compute().to_pandas()[['layer_a', 'value']])")
    sections.append(sec)

    # 5. stitching GeLU <-> SoLU
    stitch = {f"{gelu}->{solu}": R["stitch:gelu->solu"], f"{solu}->{gelu}": R["stitch:solu->gelu"]}
    sec = Section("stitching", f"Model stitching, GeLU ↔ SoLU ({gelu}, {solu}): penalty per layer, both directions")
    sec.sql = stitch_sql(gelu, solu, DOCS)
    sec.table = _sql_rows(db, sec.sql)
    sec.readings, stitch_numbers = read_stitch(stitch, (gelu, solu), sec.table)
    headlines.append(sec.readings[0])
    sec.images.append(_save(_lines("Stitching penalty (stitched − own next-token loss)", "penalty (nats/token)",
                                   {k.replace("->", " → "): _by_layer(v) for k, v in stitch.items()}, hline=0.0),
                            folder, "stitching.png"))
    sec.sql = stitch_sql(gelu, solu, DOCS)
    sec.table = _sql_rows(db, sec.sql)
    sec.python = (py_open + f"layers = list(range(1, {cfg.layers + 1}))\n"
                  + f"a = db.reps(model={gelu!r}, checkpoint={fin[gelu]!r}, dataset={DOCS!r}, pooling='token', "
                  "layer=layers)\n"
                  f"b = db.reps(model={solu!r}, checkpoint={fin[solu]!r}, dataset={DOCS!r}, pooling='token', "
                  "layer=layers)\n"
                  "ab = a.compare(b, measure='stitching', pairs='same_layer').compute()\n"
                  "ba = b.compare(a, measure='stitching', pairs='same_layer').compute()")
    sec.note = ("Penalty = B's held-out next-token loss with A's activations mapped in at hidden.N (affine map fitted "
                "by least squares on the other examples) minus B's own loss on the same held-out tokens. "
                "own_loss_of_b is the receiving model's own held-out loss.")
    sections.append(sec)
    check("stitch gelu->solu layer 1",
          f"SELECT value FROM dissimilarities WHERE measure = 'stitching' AND model_a = {_q(gelu)} "
          f"AND model_b = {_q(solu)} AND layer_a = 1 AND layer_b = 1")

    # 6. classifiers
    met = study.metrics
    sec = Section("classifiers", "Generalisation localised to layers: two classifiers from one pretrained checkpoint")
    acc = {c: met[c] for c in ("clf-cue", "clf-nocue")}
    gap_id = abs(acc["clf-cue"]["in_distribution"] - acc["clf-nocue"]["in_distribution"])
    gap_shift = acc["clf-nocue"]["shifted"] - acc["clf-cue"]["shifted"]
    cka = _by_layer(R["clf_cka"])
    p_cn, p_nc = _by_layer(R["clf_stitch:cue->nocue"]), _by_layer(R["clf_stitch:nocue->cue"])
    low = min((k for k in cka if k > 0), key=lambda k: cka[k])
    worst = max(p_cn, key=lambda k: max(p_cn[k], p_nc[k]))
    sec.readings = [
        f"In distribution (cue agrees with the label) the cue-trained classifier scores "
        f"{acc['clf-cue']['in_distribution']:.1%} and the cue-randomised one {acc['clf-nocue']['in_distribution']:.1%} "
        + (f"(within {gap_id:.1%} of each other)." if gap_id <= 0.05
           else f"(they differ by {gap_id:.1%}: not a tie in this run)."),
        f"On the shifted set (cue flipped) they score {acc['clf-cue']['shifted']:.1%} and "
        f"{acc['clf-nocue']['shifted']:.1%}: " + (
            f"the cue-trained model loses {acc['clf-cue']['in_distribution'] - acc['clf-cue']['shifted']:.1%}, "
            "so it relies on the cue."
            if gap_shift > 0.1 else "the shift does not separate them much in this run."),
        f"Their representations of the shifted texts are least similar at hidden.{low} (CKA {cka[low]:.2f}; "
        f"range over layers 1–{max(cka)}: {min(v for k, v in cka.items() if k > 0):.2f}–"
        f"{max(v for k, v in cka.items() if k > 0):.2f}); "
        f"stitching between them costs most at hidden.{worst} (cue→no-cue {p_cn[worst]:.3f}, no-cue→cue "
        f"{p_nc[worst]:.3f} nats/token).",
    ]
    headlines.append(sec.readings[1])
    series_cka = {"linear CKA (clf-cue vs clf-nocue)": cka}
    sec.images.append(_save(_lines("Classifiers: per-layer CKA on the shifted set", "linear CKA", series_cka), folder,
                            "classifiers-cka.png"))
    sec.images.append(_save(_lines("Classifiers: stitching penalty per layer", "penalty (nats/token)",
                                   {"clf-cue → clf-nocue": p_cn, "clf-nocue → clf-cue": p_nc}, hline=0.0),
                            folder, "classifiers-stitching.png"))
    sec.sql = cka_sql("clf-cue", None, "clf-nocue", None, dataset=SHIFTED, same_site=True,
                      columns="layer_a AS layer, value AS cka") + ";\n\n" + stitch_sql("clf-cue", "clf-nocue", SHIFTED)
    sec.table = [{"classifier": c, "training cue": "agrees with label" if met[c]["cue"] == "agree" else "random",
                  "in-distribution acc": met[c]["in_distribution"], "shifted acc (cue flipped)": met[c]["shifted"],
                  "no-cue acc": met[c]["no_cue"]} for c in acc]
    sec.table += [{"classifier": "", "training cue": ""}]
    sec.table += [dict(r) for r in _sql_rows(db, stitch_sql("clf-cue", "clf-nocue", SHIFTED))]
    sec.python = (py_open + f"a = db.reps(model='clf-cue', dataset={SHIFTED!r}, pooling='token')\n"
                  f"b = db.reps(model='clf-nocue', dataset={SHIFTED!r}, pooling='token')\n"
                  "cka = a.compare(b, pairs='same_layer').compute()\n"
                  "ab = a.compare(b, measure='stitching', pairs='same_layer').compute()  # hidden.1.. only")
    sec.note = ("Accuracies are measured by the demo's Python (classifier head on the last token), not stored in "
                "the catalog; they are in summary.json and demo-work/*/metrics.json. Both classifiers keep their "
                "causal-LM head (trained with a share of next-token loss), so stitching scores the receiving "
                "classifier's next-token loss on the shifted texts — a functional comparison of the backbones, "
                "not of the classification decision.")
    sections.append(sec)

    # 7. MiniLM vs GeLU, example-level
    rows = R["minilm_vs_gelu"]
    sec = Section("minilm-vs-gelu", f"The real model: {MINILM} vs {gelu}, mean-pooled per text (different tokenizers)")
    sec.readings = read_cross(MINILM, gelu, rows)[1:]
    vals = {(int(r["layer_a"]), int(r["layer_b"])): float(r["value"]) for r in rows}
    top = max(vals, key=lambda k: vals[k])
    sec.readings.insert(0, f"The most similar pair is {MINILM} hidden.{top[0]} with {gelu} hidden.{top[1]} "
                           f"(CKA {vals[top]:.2f} over {rows[0]['n']} texts).")
    sec.images.append(_save(plots.heatmap(rows, title=f"{MINILM} vs {gelu}: mean-pooled linear CKA"), folder,
                            "minilm-vs-gelu.png"))
    sec.sql = cka_sql(MINILM, None, gelu, fin[gelu], pooling="mean")
    sec.python = (py_open + f"a = db.reps(model={MINILM!r}, dataset={DOCS!r}, pooling='mean')\n"
                  f"b = db.reps(model={gelu!r}, checkpoint={fin[gelu]!r}, dataset={DOCS!r}, pooling='mean')\n"
                  "plots.save(plots.heatmap(a.compare(b, pairs='all').compute()), 'minilm-vs-gelu.png')")
    sections.append(sec)

    queries = next_queries(gelu, solu, fin)
    for _what, q in queries:  # they must work (and are cached for the user)
        _sql_rows(db, q)

    summary: dict[str, Any] = {
        "store": store, "config": cfg.__dict__, "steps": study.steps, "models": study.lms, "final": fin,
        "timings": study.timings, "accuracies": acc, "stitching": stitch_numbers,
        "sections": [{"key": s.key, "title": s.title, "readings": s.readings, "images": s.images, "sql": s.sql}
                     for s in sections],
        "checks": checks, "queries": [{"what": w, "sql": q} for w, q in queries], "headlines": headlines,
    }
    index = folder / "index.html"
    index.write_text(render_html(study, sections, queries))
    summary_json = folder / "summary.json"
    summary_json.write_text(json.dumps(summary, indent=1, default=str))
    return Report(index=index, summary_json=summary_json, headlines=headlines, queries=queries, summary=summary)


def next_queries(gelu: str, solu: str, fin: dict[str, str]) -> list[tuple[str, str]]:
    return [
        ("stitching asymmetry: both directions per layer, with the receiving model's own loss",
         "SELECT layer_a AS layer, model_a || ' -> ' || model_b AS direction, round(value, 4) AS penalty, "
         "round(CAST(json_extract(extra, '$.own_loss') AS DOUBLE), 4) AS own_loss FROM dissimilarities "
         "WHERE measure = 'stitching' ORDER BY dataset, layer, direction"),
        ("training trajectories: each layer's CKA to its model's final checkpoint",
         "SELECT model_a AS model, step_a AS step, layer_a AS layer, round(value, 3) AS cka FROM dissimilarities "
         "WHERE measure = 'linear_cka' AND model_a = model_b AND site_a = site_b AND checkpoint_a <> checkpoint_b "
         "AND pooling_a = 'token' ORDER BY model, layer, step"),
        ("a new measure computed inside SQL (and cached): SVCCA between GeLU and SoLU, layer by layer",
         f"SELECT a.layer, round(dissim('svcca', a.rep_id, b.rep_id), 4) AS svcca FROM reps a JOIN reps b "
         f"ON a.layer = b.layer WHERE a.model = {_q(gelu)} AND b.model = {_q(solu)} AND a.checkpoint = "
         f"{_q(fin[gelu])} AND b.checkpoint = {_q(fin[solu])} AND a.pooling = 'mean' AND b.pooling = 'mean' "
         "AND a.dataset = b.dataset ORDER BY a.layer"),
    ]


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2.2em;border-bottom:1px solid #ddd}
pre{background:#f6f8fa;padding:.7em;overflow-x:auto;font-size:.85em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
th{background:#f0f0f0}img{max-width:100%;border:1px solid #eee;margin:.3em 0}.reading{background:#eef6ee;padding:.5em 1em}
details{margin:.4em 0}.note{color:#555;font-size:.9em}"""  # noqa: E501 - CSS, kept as written


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(study: Study, sections: list[Section], queries: list[tuple[str, str]]) -> str:
    cfg = study.config
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>actdb demo report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>actdb demo: the motivating study in miniature</h1>",
             f"<p>Store <code>{e(str(study.store))}</code>, {e(cfg.name)} run. Models: "
             f"{e(', '.join(study.lms))} (GPT-NeoX / Pythia architecture, {cfg.layers} layers, one shared "
             f"{cfg.vocab_size}-token BPE tokenizer, {cfg.steps} training steps on {cfg.n_train_texts} generated "
             f"docstring sentences, checkpoints at steps {e(str(study.steps))}), the real {MINILM}, and two "
             f"classifiers fine-tuned from {e(study.lms[0])}. Stimuli: {cfg.n_stimuli} texts (<code>{DOCS}</code>) "
             f"and {cfg.clf_stimuli} shifted classification texts (<code>{SHIFTED}</code>).</p>",
             "<p>Every table below is the output of the SQL shown with it: paste it into "
             f"<code>actdb sql {e(str(study.store))} \"…\"</code> to get the same numbers. The readings are "
             "computed from this run's numbers.</p>",
             "<h2>Contents</h2><ul>" + "".join(f"<li><a href='#{s.key}'>{e(s.title)}</a></li>" for s in sections)
             + "<li><a href='#next'>Three queries to try next</a></li></ul>"]
    for s in sections:
        parts.append(f"<h2 id='{e(s.key)}'>{e(s.title)}</h2>")
        parts.append("<div class='reading'>" + "".join(f"<p>{e(r)}</p>" for r in s.readings) + "</div>")
        parts += [f"<p><img src='{e(i)}' alt='{e(s.title)}'></p>" for i in s.images]
        if s.note:
            parts.append(f"<p class='note'>{e(s.note)}</p>")
        if s.table:
            parts.append(_table(s.table))
        if s.sql:
            parts.append(f"<details open><summary>SQL</summary><pre>{e(s.sql)}</pre></details>")
        parts.append(f"<details><summary>Python</summary><pre>{e(s.python)}</pre></details>")
    parts.append("<h2 id='next'>Three queries to try next</h2>")
    for what, q in queries:
        parts.append(f"<p>{e(what)}</p><pre>actdb sql {e(str(study.store))} \"{e(q)}\"</pre>")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in study.timings.items())
    parts.append(f"<p class='note'>Step timings of the run that wrote this report: {e(timings)}.</p></body></html>")
    return "\n".join(parts)
