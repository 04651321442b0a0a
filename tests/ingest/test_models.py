"""The model adapter: loading, site naming, capture, splicing (run_tail), hashing, losses, SoLU."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is a hard dependency of ingest")

from actdb import models as M  # noqa: E402
from actdb.errors import InvalidInput, NotFound  # noqa: E402


@pytest.fixture(scope="module")
def bert(minilm: Path) -> M.LoadedModel:
    return M.load_model(minilm)


@pytest.fixture(scope="module")
def neox(neox_sweep: Path) -> M.LoadedModel:
    return M.load_model(neox_sweep / "checkpoint-8")


def _batch(loaded: M.LoadedModel, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = loaded.tokenizer(texts, padding=True, truncation=True, max_length=48, return_tensors="pt") \
        if loaded.tokenizer.pad_token else None
    if enc is None:
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
        enc = loaded.tokenizer(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_minilm_layout(bert: M.LoadedModel) -> None:
    assert (bert.head, bert.blocks, bert.final_norm, bert.n_layers, bert.hidden_size) == \
        ("none", "encoder.layer", None, 6, 384)
    assert bert.architecture == "BertModel" and bert.family == "bert"


def test_resolve_sites(bert: M.LoadedModel) -> None:
    assert [s.name for s in M.resolve_sites(bert, ["hidden.*"])] == [f"hidden.{i}" for i in range(7)]
    assert [s.name for s in M.resolve_sites(bert, ["hidden.-1", "hidden.6", "hidden.0"])] == ["hidden.6", "hidden.0"]
    attn = M.resolve_sites(bert, "encoder.layer.*.attention.output")
    assert [s.name for s in attn] == [f"encoder.layer.{i}.attention.output" for i in range(6)]
    assert {s.kind for s in attn} == {"module"}


def test_site_glob_matching_nothing_lists_near_modules(bert: M.LoadedModel) -> None:
    with pytest.raises(NotFound) as err:
        M.resolve_sites(bert, ["encoder.layers.*.mlp"])
    msg = str(err.value)
    assert "'encoder.layers.*.mlp' matches no module of BertModel" in msg
    assert "closest module paths: 'encoder.layer.*.intermediate'" in msg  # BERT's name for the MLP


def test_hidden_site_out_of_range(bert: M.LoadedModel) -> None:
    with pytest.raises(InvalidInput, match=r"6 blocks, so hidden.0 .*hidden.6"):
        M.resolve_sites(bert, ["hidden.7"])


def test_prefix_may_be_omitted(neox: M.LoadedModel) -> None:
    assert [s.name for s in M.resolve_sites(neox, ["layers.1.mlp.act"])] == ["gpt_neox.layers.1.mlp.act"]


def test_capture_matches_hidden_states_bert(bert: M.LoadedModel, corpus: list[str]) -> None:
    ids, mask = _batch(bert, corpus[:3])
    sites = M.resolve_sites(bert, ["hidden.*"])
    with torch.inference_mode():
        got = M.capture(bert, ids, mask, sites)
        ref = bert.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for j in range(7):  # BERT has no final norm: every hidden state is HF's
        assert torch.equal(got[f"hidden.{j}"], ref[j]), j


@pytest.mark.parametrize("kind", ["neox_sweep", "gpt2_sweep", "llama_sweep"])
def test_capture_and_run_tail_decoders(kind: str, request: pytest.FixtureRequest, corpus: list[str]) -> None:
    folder = request.getfixturevalue(kind)
    loaded = M.load_model(sorted(folder.iterdir())[-1])
    assert loaded.head == "causal"
    ids, mask = _batch(loaded, corpus[:4])
    sites = M.resolve_sites(loaded, ["hidden.*"])
    with torch.inference_mode():
        got = M.capture(loaded, ids, mask, sites)
        full = loaded.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        L = loaded.n_layers
        for j in range(L):
            assert torch.equal(got[f"hidden.{j}"], full.hidden_states[j]), j
        # hidden.L is the residual stream before the final norm; HF's last state is after it.
        norm = loaded.model.get_submodule(loaded.final_norm)
        assert torch.allclose(norm(got[f"hidden.{L}"]), full.hidden_states[L], atol=1e-6)
        real = mask.bool()
        for j in range(L + 1):
            tail = M.run_tail(loaded, got[f"hidden.{j}"], j, mask)
            assert torch.allclose(tail[real], full.logits[real], atol=1e-5), j
        # splicing other states changes the output (the hook is not a no-op)
        other = M.run_tail(loaded, got["hidden.0"], L, mask)
        assert not torch.allclose(other[real], full.logits[real], atol=1e-3)
        # and the model is intact afterwards
        again = loaded.model(input_ids=ids, attention_mask=mask)
        assert torch.equal(again.logits, full.logits)


def test_run_tail_bert(bert: M.LoadedModel, corpus: list[str]) -> None:
    ids, mask = _batch(bert, corpus[:2])
    with torch.inference_mode():
        hs = bert.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        for j in (0, 3, 6):
            out = M.run_tail(bert, hs.hidden_states[j], j, mask)
            assert torch.allclose(out[mask.bool()], hs.last_hidden_state[mask.bool()], atol=1e-5)
    with pytest.raises(InvalidInput, match=r"out of range 0..6"):
        M.run_tail(bert, hs.hidden_states[0], 7, mask)


def test_losses(neox: M.LoadedModel, corpus: list[str]) -> None:
    ids, mask = _batch(neox, corpus[:4])
    with torch.inference_mode():
        logits = M.forward(neox, ids, mask)
        labels = ids.masked_fill(mask == 0, -100)
        ref = neox.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss = M.next_token_loss(logits, ids, mask)
    assert abs(float(loss) - float(ref)) < 1e-5


def test_mask_tokens_and_mlm_loss(bert: M.LoadedModel, corpus: list[str]) -> None:
    ids, mask = _batch(bert, corpus[:4])
    masked, labels = M.mask_tokens(ids, mask, bert.tokenizer, rate=0.3, seed=1)
    again, _ = M.mask_tokens(ids, mask, bert.tokenizer, rate=0.3, seed=1)
    assert torch.equal(masked, again)
    chosen = labels != -100
    assert chosen.any() and (masked[chosen] == bert.tokenizer.mask_token_id).all()
    assert not chosen[:, 0].any()  # [CLS] is never masked
    logits = torch.zeros(*ids.shape, 10)
    labels10 = labels.clamp(max=9).masked_fill(~chosen, -100)
    assert abs(float(M.masked_lm_loss(logits, labels10)) - float(torch.log(torch.tensor(10.0)))) < 1e-5


def test_weights_hash(neox_sweep: Path, tmp_path: Path) -> None:
    a = M.load_model(neox_sweep / "checkpoint-4")
    shutil.copytree(neox_sweep / "checkpoint-4", tmp_path / "copy")
    b = M.load_model(tmp_path / "copy")
    c = M.load_model(neox_sweep / "checkpoint-8")
    assert M.weights_hash(a.model) == M.weights_hash(b.model) != M.weights_hash(c.model)
    assert M.weights_hash(a.model).startswith("sha256:")


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"model folder .*nope' does not exist"):
        M.load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match=r"has no config.json"):
        M.load_model(tmp_path / "empty")


def test_hub_id_not_cached_is_not_downloaded() -> None:
    with pytest.raises(NotFound, match="not in the local Hugging Face cache; actdb does not download"):
        M.load_model("no-such-org/no-such-model-actdb", revision="step1000")


class _Evil:
    def __reduce__(self):  # pickle protocol
        return (shutil.rmtree, ("/nonexistent-actdb-test",))


def test_pickled_weights_load_only_with_weights_only(neox_sweep: Path, tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy(neox_sweep / "checkpoint-4" / "config.json", folder)
    with (folder / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"x": _Evil()}, f, protocol=2)
    with pytest.raises(InvalidInput, match=r"only unpickles with weights_only=True .found shutil.rmtree."):
        M.load_model(folder, tokenizer=neox_sweep / "checkpoint-4")


def test_device_not_available() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so cuda is a valid device here")
    with pytest.raises(InvalidInput, match="not available here"):
        M.parse_device("cuda")
    with pytest.raises(InvalidInput, match="not a torch device"):
        M.parse_device("gpu7")


@pytest.fixture(scope="module")
def solu_checkpoint(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """An untrained tiny SoLU model (hidden_act="solu"), saved as the demo saves its checkpoints."""
    from actdb.demo.training import pythia_config, train_causal_lm, train_tokenizer

    folder = tmp_path_factory.mktemp("solu")
    tok = train_tokenizer(corpus[:200], vocab_size=300)
    config = pythia_config(len(tok), width=16, layers=1, heads=2, act="solu")
    return train_causal_lm(config, tok, corpus[:32], folder, checkpoint_steps=[0])[0]


def test_solu_registers_on_load_not_on_import(solu_checkpoint: Path) -> None:
    code = f"""
import sys
import actdb, actdb.models, actdb.demo.training
assert "torch" not in sys.modules and "transformers" not in sys.modules, "importing actdb imported torch"
from transformers import activations
assert "solu" not in activations.ACT2CLS, "importing actdb registered SoLU"
loaded = actdb.models.load_model({str(solu_checkpoint)!r})
assert type(loaded.model.gpt_neox.layers[0].mlp.act).__name__ == "SoLU"
assert activations.ACT2CLS["solu"] is type(loaded.model.gpt_neox.layers[0].mlp.act)
assert type(activations.ACT2FN["solu"]) is activations.ACT2CLS["solu"]  # ACT2FN instantiates on lookup
"""
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_solu_activation_round_trips(solu_checkpoint: Path) -> None:
    from transformers import activations

    from actdb.models.solu import register_solu, solu

    loaded = M.load_model(solu_checkpoint)
    registered = activations.ACT2CLS["solu"]
    M.register_solu()
    register_solu()
    assert activations.ACT2CLS["solu"] is registered  # registered once: later calls change nothing
    act = loaded.model.gpt_neox.layers[0].mlp.act
    assert isinstance(act, registered)
    x = torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(0))
    y = x * torch.softmax(x, dim=-1)
    expected = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(act(x), expected, atol=1e-5) and torch.allclose(solu(x), expected, atol=1e-5)
