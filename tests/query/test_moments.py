"""The streaming accumulator: exactness against direct float64 formulas, merging,
serialisation, chunking, precision and input errors."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from measures_data import activations, related_pair

from actdb.errors import InvalidInput, NonFinite
from actdb.query.measures import _moment_route as mr
from actdb.query.moments import Moments, as_matrix, kernel, shard_moments


def direct_pair(x: np.ndarray, y: np.ndarray) -> dict[str, object]:
    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l = (xc**2).sum(1), (yc**2).sum(1)
    return {"sxx": xc.T @ xc, "syy": yc.T @ yc, "sxy": xc.T @ yc,
            "kk": (k * k).sum(), "ll": (l * l).sum(), "kl": (k * l).sum()}


def assert_pair_matches(m: Moments, i: int, j: int, x: np.ndarray, y: np.ndarray, rtol: float = 1e-12) -> None:
    pm, ref = m.pair(i, j), direct_pair(x, y)
    assert pm.n == x.shape[0]
    np.testing.assert_allclose(pm.mean_x, x.mean(0), rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(pm.mean_y, y.mean(0), rtol=rtol, atol=1e-12)
    for key in ("sxx", "syy", "sxy"):
        scale = np.abs(ref[key]).max()
        np.testing.assert_allclose(getattr(pm, key), ref[key], rtol=0, atol=rtol * scale)
    assert pm.sum_kk == pytest.approx(ref["kk"], rel=rtol)
    assert pm.sum_ll == pytest.approx(ref["ll"], rel=rtol)
    assert pm.sum_kl == pytest.approx(ref["kl"], rel=rtol)


def test_every_pair_of_three_reps_matches_direct_formulas() -> None:
    reps = [activations(400, d, s) for d, s in ((7, 1), (12, 2), (3, 3))]
    m = Moments.from_chunks(
        ([r[a:a + 61] for r in reps] for a in range(0, 400, 61)), [7, 12, 3]
    )
    for i in range(3):
        for j in range(3):
            assert_pair_matches(m, i, j, reps[i], reps[j])


def test_merge_of_differently_centred_parts_is_exact() -> None:
    x, y = related_pair(300, 6, 9, seed=4)
    a = Moments.empty([6, 9]).update([x[:50], y[:50]])
    b = Moments.empty([6, 9]).update([x[50:] + 0.0, y[50:]])
    assert not np.allclose(a.center, b.center)  # the shifts really differ
    assert_pair_matches(a + b, 0, 1, x, y)
    assert_pair_matches(b + a, 0, 1, x, y)
    assert_pair_matches(sum([a, b]), 0, 1, x, y)  # type: ignore[arg-type]
    assert_pair_matches((a + b) - a, 0, 1, x[50:], y[50:], rtol=1e-10)


def test_merge_with_empty_and_subtract_too_much() -> None:
    x, y = related_pair(50, 4, 4, seed=5)
    a = Moments.empty([4, 4]).update([x, y])
    assert_pair_matches(a + Moments.empty([4, 4]), 0, 1, x, y)
    assert_pair_matches(Moments.empty([4, 4]) + a, 0, 1, x, y)
    with pytest.raises(InvalidInput, match="cannot subtract 50 rows"):
        Moments.empty([4, 4]).update([x[:10], y[:10]]) - a
    with pytest.raises(InvalidInput, match="cannot combine"):
        a + Moments.empty([4, 5])


def test_serialisation_round_trips_through_bytes_and_npz(tmp_path) -> None:
    x, y = related_pair(120, 5, 3, seed=6)
    m = Moments.empty([5, 3]).update([x, y])
    back = Moments.from_bytes(m.to_bytes())
    np.savez(tmp_path / "m.npz", **m.to_arrays())
    with np.load(tmp_path / "m.npz") as z:
        again = Moments.from_arrays(z)
    for other in (back, again):
        assert other.dims == m.dims and other.n == m.n
        assert other.pair(0, 1).sum_kl == m.pair(0, 1).sum_kl
        np.testing.assert_array_equal(other.pair(0, 1).sxy, m.pair(0, 1).sxy)
    arrays = m.to_arrays()
    arrays["format_version"] = np.array(99)
    with pytest.raises(InvalidInput, match="format version 99"):
        Moments.from_arrays(arrays)
    with pytest.raises(InvalidInput, match="missing"):
        Moments.from_arrays({"format_version": np.array(1)})
    assert isinstance(io.BytesIO(m.to_bytes()).read(2), bytes)


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 119), max_size=8, unique=True),
    budget_rows=st.integers(1, 130),
    seed=st.integers(0, 1000),
)
def test_any_chunking_equals_in_memory(cuts: list[int], budget_rows: int, seed: int) -> None:
    x, y = related_pair(120, 6, 4, seed)
    edges = [0, *sorted(cuts), 120]
    streamed = Moments.from_chunks(
        ([x[a:b], y[a:b]] for a, b in itertools.pairwise(edges)), [6, 4],
        budget_bytes=budget_rows * 8 * 10,
    )
    whole = Moments.empty([6, 4]).update([x, y])
    for f in (mr.linear_cka_from_moments, mr.debiased_cka_from_moments,
              mr.procrustes_from_moments, mr.mean_cca_from_moments, mr.gulp_from_moments):
        assert abs(f(streamed.pair(0, 1)) - f(whole.pair(0, 1))) < 1e-10


def test_mixed_precision_stays_within_1e8_on_activation_like_data() -> None:
    x, y = related_pair(6000, 192, 256, seed=7)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    exact = Moments.empty([192, 256]).update([x32, y32]).pair(0, 1)
    mixed = Moments.empty([192, 256], precision="mixed").update([x32, y32]).pair(0, 1)
    for f in (mr.linear_cka_from_moments, mr.debiased_cka_from_moments):
        assert abs(f(mixed) - f(exact)) < 1e-8
    # nuclear-norm measures amplify float32 product error: documented as ~1e-7
    assert abs(mr.procrustes_from_moments(mixed) - mr.procrustes_from_moments(exact)) < 1e-6
    # and it really used float32 products (otherwise this test proves nothing)
    assert not np.array_equal(mixed.sxy, exact.sxy)


def test_update_errors_name_the_problem() -> None:
    m = Moments.empty([3, 2])
    with pytest.raises(InvalidInput, match="needs 2 arrays"):
        m.update([np.zeros((4, 3))])
    with pytest.raises(InvalidInput, match="rep 1 chunk has 3 columns, expected 2"):
        m.update([np.zeros((4, 3)), np.zeros((4, 3))])
    with pytest.raises(InvalidInput, match="share rows"):
        m.update([np.zeros((4, 3)), np.zeros((5, 2))])
    bad = np.ones((6, 2))
    bad[4, 1] = np.nan
    with pytest.raises(NonFinite, match="row 4"):
        m.update([np.ones((6, 3)), bad])
    with pytest.raises(InvalidInput, match="precision"):
        Moments.empty([2], precision="float16")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="positive widths"):
        Moments.empty([])
    with pytest.raises(InvalidInput, match="2-D"):
        as_matrix(np.zeros((2, 2, 2)))
    with pytest.raises(InvalidInput, match="numeric"):
        as_matrix(np.array([["a"]]))


def test_shards_sum_to_the_whole() -> None:
    x, y = related_pair(103, 4, 5, seed=8)
    parts = shard_moments([x, y], 7)
    sizes = [p.n for p in parts]
    assert sum(sizes) == 103 and max(sizes) - min(sizes) <= 1 and len(sizes) == 7
    assert_pair_matches(sum(parts[1:], parts[0]), 0, 1, x, y)
    with pytest.raises(InvalidInput, match="n_shards"):
        shard_moments([x, y], 1)


def outlier_reps(n: int, dims: list[int], seed: int) -> list[np.ndarray]:
    """float32 activation-like reps with 4 large-mean, large-variance outlier columns each,
    consecutive reps related (as layers are)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for d in dims:
        x = rng.standard_normal((n, 16)) @ rng.standard_normal((16, d)) + rng.standard_normal((n, d))
        x[:, :4] = 20 * x[:, :4] + 30
        if out and out[-1].shape[1] == d:
            x += 0.7 * out[-1]
        out.append(x.astype(np.float32))
    return out


def test_mixed_tiled_panels_and_heavy_columns_stay_within_1e8() -> None:
    dims = [160, 96, 160, 64]  # D = 480 > MIXED_MIN_WIDTH; 4 reps with unequal widths
    reps = outlier_reps(3000, dims, seed=3)
    exact = Moments.empty(dims).update(reps)
    # a small budget forces several row sub-chunks and several product panels
    small = Moments.empty(dims, precision="mixed", budget_bytes=2 * 4 * 480 * 200)
    assert len(kernel.panels(small.offsets, small.budget_bytes, np.dtype(np.float32))) > 1
    small.update(reps)
    whole = Moments.empty(dims, precision="mixed").update(reps)
    assert not np.array_equal(whole.pair(0, 1).sxy, exact.pair(0, 1).sxy)  # float32 really used
    masked = Moments.empty(dims, precision="mixed", budget_bytes=2 * 4 * 480 * 200, pairs=[(0, 2), (3, 1)])
    masked.update(reps)
    for i, j in ((0, 2), (1, 3)):
        a, b = masked.pair(i, j), exact.pair(i, j)
        assert abs(mr.linear_cka_from_moments(a) - mr.linear_cka_from_moments(b)) < 1e-8
    for m in (small, whole):
        for i in range(4):
            for j in range(i, 4):
                a, b = m.pair(i, j), exact.pair(i, j)
                assert abs(mr.linear_cka_from_moments(a) - mr.linear_cka_from_moments(b)) < 1e-8
                if i != j:
                    assert abs(mr.debiased_cka_from_moments(a) - mr.debiased_cka_from_moments(b)) < 1e-8


def test_mixed_float64_input_is_centred_before_rounding() -> None:
    # a mean of 1e4 with unit spread: rounding x itself to float32 would cost ~1e-3 relative
    rng = np.random.default_rng(5)
    x = 1e4 + rng.standard_normal((2000, 200))
    y = x[:, :150] @ rng.standard_normal((150, 150)) + rng.standard_normal((2000, 150))
    exact = Moments.empty([200, 150]).update([x, y]).pair(0, 1)
    mixed = Moments.empty([200, 150], precision="mixed").update([x, y]).pair(0, 1)
    # float64 input is rounded to float32 once centred (~6e-8 relative per value): the error
    # stays at the 1e-8 level; rounding before centring would cost ~1e-3
    assert abs(mr.linear_cka_from_moments(mixed) - mr.linear_cka_from_moments(exact)) < 5e-8


def test_mixed_merge_then_update_keeps_a_float32_exact_shift() -> None:
    reps = outlier_reps(1200, [200, 120], seed=8)
    a = Moments.empty([200, 120], precision="mixed").update([r[:500] for r in reps])
    b = Moments.empty([200, 120], precision="mixed").update([r[500:900] for r in reps])
    merged = (a + b).recentered((a + b).mean())  # an arbitrary float64 shift
    merged.update([r[900:] for r in reps])
    assert np.array_equal(merged.center.astype(np.float32).astype(np.float64), merged.center)
    exact = Moments.empty([200, 120]).update(reps).pair(0, 1)
    got = merged.pair(0, 1)
    assert got.n == 1200
    assert abs(mr.linear_cka_from_moments(got) - mr.linear_cka_from_moments(exact)) < 1e-8


def test_mixed_float32_overflow_is_a_typed_error() -> None:
    x = np.ones((10, 300))
    x[3, 7] = 1e39  # finite in float64, not in float32
    with pytest.raises(InvalidInput, match="overflow float32"):
        Moments.empty([300], precision="mixed").update([x])
    Moments.empty([300]).update([x])  # float64 handles it


def test_pairs_mask_accumulates_only_the_wanted_blocks_and_matches() -> None:
    reps = [activations(300, d, s) for d, s in ((5, 1), (7, 2), (4, 3), (6, 4))]
    m = Moments.from_chunks(([r[a:a + 70] for r in reps] for a in range(0, 300, 70)), [5, 7, 4, 6])
    sparse = Moments.empty([5, 7, 4, 6], pairs=[(0, 3), (2, 1)])
    for a in range(0, 300, 70):
        sparse.update([r[a:a + 70] for r in reps])
    assert set(sparse.blocks) == {(0, 0), (3, 3), (0, 3), (1, 1), (2, 2), (1, 2)}
    for i, j in ((0, 3), (3, 0), (1, 2), (2, 1), (0, 0)):
        assert_pair_matches(sparse, i, j, reps[i], reps[j])
        assert sparse.has_pair(i, j)
    assert not sparse.has_pair(0, 1)
    with pytest.raises(InvalidInput, match=r"pair \(0, 1\) was not accumulated"):
        sparse.pair(0, 1)
    with pytest.raises(InvalidInput, match="out of range"):
        Moments.empty([3, 3], pairs=[(0, 2)])
    # merges keep the mask and stay exact; mixing masks is refused
    half = Moments.empty([5, 7, 4, 6], pairs=[(0, 3), (2, 1)]).update([r[:150] for r in reps])
    rest = Moments.empty([5, 7, 4, 6], pairs=[(0, 3), (2, 1)]).update([r[150:] for r in reps])
    assert_pair_matches(half + rest, 0, 3, reps[0], reps[3], rtol=1e-10)
    with pytest.raises(InvalidInput, match="different blocks"):
        half + m


def test_a_cached_rep_supplies_its_own_block_exactly() -> None:
    """The per-rep cache path: rep 0's statistics from an earlier pass, a new pass that
    accumulates only rep 1's block and the cross block, then every pair is exact."""
    x, y = related_pair(400, 6, 8, seed=11)
    earlier = Moments.empty([6]).update([x[:123]]).update([x[123:]])
    cached = Moments.from_bytes(earlier.rep(0).to_bytes())
    for precision in ("float64", "mixed"):
        m = Moments.empty([6, 8], skip_diag=[0], precision=precision)  # type: ignore[arg-type]
        for a in range(0, 400, 90):
            m.update([x[a:a + 90], y[a:a + 90]])
        assert (0, 0) not in m.blocks
        with pytest.raises(InvalidInput, match="set_rep"):
            m.pair(0, 1)
        m.set_rep(0, cached)
        assert_pair_matches(m, 0, 1, x, y, rtol=1e-10)
    with pytest.raises(InvalidInput, match="cover 100 rows but this pass has 400"):
        Moments.empty([6, 8], skip_diag=[0]).update([x, y]).set_rep(0, Moments.empty([6]).update([x[:100]]))
    with pytest.raises(InvalidInput, match="not the same rows"):
        Moments.empty([6, 8], skip_diag=[0]).update([x, y]).set_rep(0, Moments.empty([6]).update([x[::-1] * 2]))
    with pytest.raises(InvalidInput, match="width 6"):
        Moments.empty([6, 8], skip_diag=[0]).update([x, y]).set_rep(0, Moments.empty([8]).update([y]))


def test_skipped_blocks_survive_a_merge_of_differently_centred_parts() -> None:
    x, y = related_pair(500, 5, 4, seed=12)
    parts = [Moments.empty([5, 4], skip_diag=[1]).update([x[a:b], y[a:b]])
             for a, b in ((0, 200), (200, 350), (350, 500))]
    merged = sum(parts[1:], parts[0])
    merged.set_rep(1, Moments.empty([4]).update([y]))
    assert_pair_matches(merged, 0, 1, x, y, rtol=1e-10)


def test_a_pass_with_every_diagonal_skipped_serialises() -> None:
    x, y = related_pair(100, 3, 4, seed=13)
    m = Moments.empty([3, 4], skip_diag=[0, 1]).update([x, y])
    back = Moments.from_bytes(m.to_bytes())
    assert set(back.blocks) == {(0, 1)}
    back.set_rep(0, Moments.empty([3]).update([x])).set_rep(1, Moments.empty([4]).update([y]))
    assert_pair_matches(back, 0, 1, x, y, rtol=1e-10)


def test_settle_centres_in_place_without_a_copy_and_then_refuses_rows() -> None:
    reps = [activations(300, d, s) for d, s in ((5, 1), (8, 2), (4, 3))]
    m = Moments.empty([5, 8, 4], pairs=[(0, 1), (1, 2)])
    for a in range(0, 300, 70):
        m.update([r[a:a + 70] for r in reps])
    blocks = {k: id(b) for k, b in m.blocks.items()}
    assert m.settle() is m
    assert {k: id(b) for k, b in m.blocks.items()} == blocks  # the same arrays, centred in place
    np.testing.assert_allclose(m.center, np.concatenate([r.mean(0) for r in reps]), rtol=1e-13)
    for i, j in ((0, 1), (1, 2), (1, 1)):
        assert_pair_matches(m, i, j, reps[i], reps[j])
    assert m.pair(0, 1).sxx is m.blocks[(0, 0)]  # reading pairs makes no copies
    assert_pair_matches(m - Moments.empty([5, 8, 4], pairs=[(0, 1), (1, 2)]), 0, 1, reps[0], reps[1])
    single = m.rep(1)
    assert_pair_matches(single, 0, 0, reps[1], reps[1])
    with pytest.raises(InvalidInput, match="settled"):
        m.update([r[:3] for r in reps])


def test_without_row_norms_every_other_measure_is_unchanged_and_debiased_cka_refuses() -> None:
    x, y = related_pair(500, 7, 9, seed=11)
    full = Moments.empty([7, 9]).update([x, y])
    lean = Moments.empty([7, 9], row_norms=False)
    for a in range(0, 500, 128):
        lean.update([x[a:a + 128], y[a:a + 128]])
    assert full.row_norms and not lean.row_norms
    for name in ("linear_cka_from_moments", "mean_cca_from_moments", "procrustes_from_moments",
                 "gulp_from_moments", "linear_regression_from_moments"):
        fn = getattr(mr, name)
        assert fn(lean.pair(0, 1)) == pytest.approx(fn(full.pair(0, 1)), rel=1e-12)
    with pytest.raises(InvalidInput, match="row_norms=True"):
        mr.debiased_cka_from_moments(lean.pair(0, 1))
    again = Moments.from_bytes(lean.to_bytes())
    assert not again.row_norms
    assert mr.linear_cka_from_moments(again.pair(0, 1)) == pytest.approx(mr.linear_cka_from_moments(lean.pair(0, 1)),
                                                                        rel=1e-14)
    assert not (full + lean).row_norms and not (lean + full).row_norms  # a merge has what both have
    with pytest.raises(InvalidInput, match="row_norms=True"):
        mr.debiased_cka_from_moments((full + lean).pair(0, 1))


@pytest.mark.parametrize("d", [1, 255, 256, 600])
def test_tiled_symmetrisation_equals_the_whole_matrix_average(d: int) -> None:
    a = np.random.default_rng(d).standard_normal((d, d))
    expect = (a + a.T) * 0.5
    kernel.symmetrise(a)  # tile pairs, partial tiles at the edge
    assert np.array_equal(a, expect) and np.array_equal(a, a.T)


def test_settled_diagonal_blocks_are_exactly_symmetric_at_widths_past_one_tile() -> None:
    x = activations(700, 300, 5)
    m = Moments.empty([300, 300], precision="float64").update([x, x[:, ::-1] * 2.0]).settle()
    for k in ((0, 0), (1, 1)):
        assert np.array_equal(m.blocks[k], m.blocks[k].T)
    assert_pair_matches(m, 0, 1, x, x[:, ::-1] * 2.0)
