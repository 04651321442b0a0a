"""Each measure against an independent float64 textbook implementation and the peer
libraries (repsim, rsatoolbox, scikit-learn, scipy), plus registry, routes, stderr and
degenerate input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from measures_data import activations, related_pair

from actdb.errors import InvalidInput, MeasureError, NonFinite, NotFound
from actdb.query import measures as M
from actdb.query.measures import REGISTRY, MeasureSpec, get_measure, register

REL = 1e-6


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return related_pair(151, 12, 9, seed=11)


# ---------------------------------------------------------------- textbook references
def centring(n: int) -> np.ndarray:
    return np.eye(n) - np.ones((n, n)) / n


def hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    h = centring(k.shape[0])
    return float(np.trace(k @ h @ l @ h))


def hsic_song(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012 eq. (5), written on the raw (uncentred) kernels."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return float(
        np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    ) / (n * (n - 3))


def cka_textbook(k: np.ndarray, l: np.ndarray, hsic=hsic_biased) -> float:
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def cca_textbook(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical correlations as cosines of principal angles (scipy), an independent route."""
    return np.cos(scipy.linalg.subspace_angles(x - x.mean(0), y - y.mean(0)))[::-1]


# ---------------------------------------------------------------- CKA family
def test_linear_cka_matches_textbook_and_repsim(pair) -> None:
    x, y = pair
    ref = cka_textbook(x @ x.T, y @ y.T)
    assert M.linear_cka(x, y) == pytest.approx(ref, rel=1e-12)
    repsim = pytest.importorskip("repsim", reason="repsim is a test dependency")
    assert M.linear_cka(x, y) == pytest.approx(repsim.cka([x, y], "linear", "gretton")[0, 1], rel=REL)


def test_debiased_cka_matches_song_formula_on_raw_and_centred_kernels(pair) -> None:
    x, y = pair
    value = M.debiased_cka(x, y)
    assert value == pytest.approx(cka_textbook(x @ x.T, y @ y.T, hsic_song), rel=1e-10)
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert value == pytest.approx(cka_textbook(xc @ xc.T, yc @ yc.T, hsic_song), rel=1e-10)
    assert value != pytest.approx(M.linear_cka(x, y), rel=1e-3)  # the debiasing does something


@pytest.mark.parametrize("name", ["linear_cka", "debiased_cka"])
def test_gram_route_equals_moments_route(pair, name: str) -> None:
    x, y = pair
    spec = get_measure(name)
    assert spec.func(x, y, route="gram") == pytest.approx(spec.func(x, y), rel=1e-12)
    res = M.evaluate(name, x, y, route="gram")
    assert res.route == "gram" and res.sample is not None and res.sample.exact


def test_rbf_cka_conventions_against_kornblith_and_repsim() -> None:
    x, y = related_pair(75, 6, 5, seed=12)  # odd n: Kornblith's median of squares is exact
    def kornblith_gram_rbf(a: np.ndarray, threshold: float) -> np.ndarray:
        dot = a @ a.T
        sq = np.diag(dot)
        sqd = -2 * dot + sq[:, None] + sq[None, :]
        return np.exp(-sqd / (2 * threshold**2 * np.median(sqd)))
    ref = cka_textbook(kornblith_gram_rbf(x, 0.8), kornblith_gram_rbf(y, 0.8))
    assert M.rbf_cka(x, y, median="all") == pytest.approx(ref, rel=1e-9)
    default = M.rbf_cka(x, y)
    assert default != pytest.approx(ref, rel=1e-7)  # the two conventions really differ
    repsim = pytest.importorskip("repsim", reason="repsim is a test dependency")
    assert M.rbf_cka(x, y, sigma=1.0) == pytest.approx(repsim.cka([x, y], "rbf", "gretton")[0, 1], rel=REL)


# ---------------------------------------------------------------- CCA family
def test_mean_cca_matches_principal_angles_sklearn_and_repsim(pair) -> None:
    x, y = pair
    rho = cca_textbook(x, y)
    assert M.mean_cca(x, y) == pytest.approx(rho.mean(), rel=1e-9)
    from sklearn.cross_decomposition import CCA

    u, v = CCA(n_components=1, max_iter=5000, tol=1e-14, scale=False).fit(x, y).transform(x, y)
    first = abs(np.corrcoef(u[:, 0], v[:, 0])[0, 1])
    assert first == pytest.approx(rho[0], rel=REL)
    repsim = pytest.importorskip("repsim", reason="repsim is a test dependency")
    assert M.mean_cca(x, y) == pytest.approx(repsim.cca([x, y], "pillai")[0, 1], rel=REL)


def test_svcca_truncates_to_99_percent_variance(pair) -> None:
    x, y = pair
    def reduce(a: np.ndarray, keep: float) -> np.ndarray:
        ac = a - a.mean(0)
        u, s, _ = np.linalg.svd(ac, full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), keep) + 1)
        return u[:, :k] * s[:k]
    for keep in (0.99, 0.8):
        ref = cca_textbook(reduce(x, keep), reduce(y, keep)).mean()
        assert M.svcca(x, y, keep=keep) == pytest.approx(ref, rel=1e-9)
    assert M.svcca(x, y, keep=0.8) != pytest.approx(M.mean_cca(x, y), rel=1e-3)
    # repsim's svcca truncates by a different rule than Raghu et al.'s 99%-of-variance one and
    # disagrees whenever truncation happens, so it is not used as a reference here.


def pwcca_textbook(x: np.ndarray, y: np.ndarray) -> float:
    """Morcos et al. weights in sample space via QR-based CCA, weighted by X's neurons."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    qx, _ = np.linalg.qr(xc)
    qy, _ = np.linalg.qr(yc)
    u, rho, _ = np.linalg.svd(qx.T @ qy)
    k = min(x.shape[1], y.shape[1])
    h = qx @ u[:, :k]  # unit canonical variates of X
    alpha = np.abs(h.T @ xc).sum(axis=1)
    return float(np.sum(alpha * rho[:k]) / alpha.sum())


def test_pwcca_directions(pair) -> None:
    x, y = pair
    assert M.pwcca(x, y) == pytest.approx(pwcca_textbook(x, y), rel=1e-9)
    assert M.pwcca(x, y, weights="y") == pytest.approx(pwcca_textbook(y, x), rel=1e-9)
    assert M.pwcca(x, y, weights="smaller") == pytest.approx(pwcca_textbook(y, x), rel=1e-9)  # d2 < d1
    assert M.pwcca(x, y) != pytest.approx(M.pwcca(y, x), rel=1e-4)  # not symmetric by default
    repsim = pytest.importorskip("repsim", reason="repsim is a test dependency")
    assert M.pwcca(x, y, weights="mean") == pytest.approx(repsim.pwcca([x, y])[0, 1], rel=REL)


# ---------------------------------------------------------------- Procrustes, regression, GULP
def test_procrustes_matches_scipy_orthogonal_procrustes(pair) -> None:
    x, y = pair
    xn = (x - x.mean(0)) / np.linalg.norm(x - x.mean(0))
    yn = np.zeros_like(xn)  # zero-pad Y to X's width (d2 < d1)
    yn[:, : y.shape[1]] = (y - y.mean(0)) / np.linalg.norm(y - y.mean(0))
    r, _ = scipy.linalg.orthogonal_procrustes(xn, yn)
    d2 = float(np.linalg.norm(xn @ r - yn) ** 2)
    assert M.procrustes(x, y) == pytest.approx(d2, rel=1e-9)
    assert M.procrustes(x, y, squared=False) == pytest.approx(np.sqrt(d2), rel=1e-9)


@pytest.mark.parametrize("ridge", [0.0, 5.0])
def test_linear_regression_matches_sklearn(pair, ridge: float) -> None:
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.metrics import r2_score

    x, y = pair
    model = Ridge(alpha=ridge, solver="svd") if ridge else LinearRegression()
    pred = model.fit(x, y).predict(x)
    ref = r2_score(y, pred, multioutput="variance_weighted")
    assert M.linear_regression(x, y, ridge=ridge) == pytest.approx(ref, rel=1e-9)
    assert M.linear_regression(x, y) != pytest.approx(M.linear_regression(y, x), rel=1e-3)


@pytest.mark.parametrize("lam", [1e-2, 1.0])
def test_gulp_matches_direct_matrix_formula(pair, lam: float) -> None:
    x, y = pair
    n = x.shape[0]
    xc, yc = x - x.mean(0), y - y.mean(0)
    sx, sy, sxy = xc.T @ xc / n, yc.T @ yc / n, xc.T @ yc / n
    ix, iy = np.linalg.inv(sx + lam * np.eye(len(sx))), np.linalg.inv(sy + lam * np.eye(len(sy)))
    d2 = np.trace(sx @ ix @ sx @ ix) + np.trace(sy @ iy @ sy @ iy) - 2 * np.trace(ix @ sxy @ iy @ sxy.T)
    assert M.gulp(x, y, lam=lam, squared=True) == pytest.approx(d2, rel=1e-9)
    assert M.gulp(x, y, lam=lam) == pytest.approx(np.sqrt(d2), rel=1e-9)


def test_gulp_of_a_representation_with_itself_or_a_rotation_is_exactly_zero(pair) -> None:
    x, _ = pair
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((x.shape[1], x.shape[1])))
    for lam in (1e-2, 1.0):
        # d² is ~1e-14 of rounding noise here: without the noise floor its square root is ~1e-7
        assert M.gulp(x, x, lam=lam) == 0.0
        assert M.gulp(x, x @ q, lam=lam) == 0.0
    y = x.copy()
    y[:, 0] += 1e-3 * np.random.default_rng(4).standard_normal(len(y))  # a real, tiny difference
    assert M.gulp(x, y, lam=1e-2) > 0.0


# ---------------------------------------------------------------- Gram-route measures
def test_rsa_matches_rsatoolbox_and_scipy(pair) -> None:
    x, y = pair
    iu = np.triu_indices(x.shape[0], 1)
    rx, ry = 1 - np.corrcoef(x)[iu], 1 - np.corrcoef(y)[iu]
    assert M.rsa(x, y) == pytest.approx(scipy.stats.spearmanr(rx, ry).statistic, rel=1e-9)
    assert M.rsa(x, y, compare="pearson") == pytest.approx(scipy.stats.pearsonr(rx, ry).statistic, rel=1e-9)
    rsatoolbox = pytest.importorskip("rsatoolbox", reason="rsatoolbox is a test dependency")
    d1 = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(x), method="correlation")
    d2 = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(y), method="correlation")
    assert M.rsa(x, y) == pytest.approx(float(rsatoolbox.rdm.compare(d1, d2, method="spearman")[0, 0]), rel=REL)
    assert M.rsa(x, y, rdm_method="euclidean") != pytest.approx(M.rsa(x, y), rel=1e-3)


def test_spearman_ranks_average_ties_like_scipy() -> None:
    from actdb.query.measures._gram_route import _rank

    a = np.random.default_rng(3).integers(0, 5, 200).astype(float)  # many ties
    np.testing.assert_allclose(_rank(a), scipy.stats.rankdata(a), rtol=0, atol=0)


def test_knn_overlap_matches_sklearn_neighbours(pair) -> None:
    from sklearn.neighbors import NearestNeighbors

    x, y = pair
    x, y = x - x.mean(0), y - y.mean(0)  # avoid near-ties in cosine order (offset outliers)
    k = 7
    def nbrs(a: np.ndarray) -> np.ndarray:
        idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(a).kneighbors(a)[1]
        return np.array([[j for j in row if j != i][:k] for i, row in enumerate(idx)])
    nx, ny = nbrs(x), nbrs(y)
    ref = np.mean([len(set(a) & set(b)) / k for a, b in zip(nx, ny, strict=True)])
    assert M.knn_overlap(x, y, k=k) == pytest.approx(ref, abs=1e-12)
    assert M.knn_overlap(x, x, k=k) == 1.0


def test_row_sample_is_seeded_recorded_and_exact_when_small() -> None:
    x, y = related_pair(300, 5, 4, seed=13)
    res = M.evaluate("rsa", x, y, sample=100, seed=3)
    assert res.sample is not None and not res.sample.exact and res.sample.indices.size == 100
    assert res.params["sample"] == 100 and res.params["seed"] == 3
    assert res.value == M.rsa(x, y, sample=100, seed=3)
    assert res.value != M.rsa(x, y, sample=100, seed=4)
    idx = res.sample.indices
    assert res.value == pytest.approx(M.rsa(x[idx], y[idx]), rel=1e-12)
    assert M.evaluate("rsa", x, y).sample.exact  # type: ignore[union-attr]


# ---------------------------------------------------------------- registry
def test_registry_contract() -> None:
    expected = {"linear_cka", "debiased_cka", "rbf_cka", "svcca", "pwcca", "mean_cca",
                "procrustes", "rsa", "knn_overlap", "gulp", "linear_regression"}
    assert expected <= set(REGISTRY)
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.citation and spec.kind in ("similarity", "distance")
        assert spec.route in ("moments", "gram", "model")
        assert (spec.from_moments is not None) == (spec.route == "moments")
        if name in expected:  # measures registered by other modules (e.g. stitching) live there
            assert getattr(M, name) is spec.func
    assert get_measure("procrustes").kind == "distance"
    assert get_measure("rsa").route == "gram"


def test_unknown_measure_and_parameter_messages() -> None:
    with pytest.raises(NotFound,
                       match=r"unknown measure 'linear_ckaa'; did you mean 'linear_cka'.*Known measures: .*rsa"):
        get_measure("linear_ckaa")
    with pytest.raises(KeyError):  # builtin compatibility
        get_measure("nope")
    with pytest.raises(InvalidInput,
                       match="no parameter 'bandwidth'; valid parameters: debiased, median, sample, seed, sigma"):
        M.evaluate("rbf_cka", np.eye(5), np.eye(5), bandwidth=1.0)


def test_register_a_model_route_measure() -> None:
    spec = MeasureSpec(name="stitching_test", func=lambda x, y: 0.0, kind="distance",
                       value_range=(0.0, float("inf")), route="model", params={"steps": 100},
                       citation="Bansal et al. 2021")
    register(spec)
    try:
        assert get_measure("stitching_test") is spec
        with pytest.raises(InvalidInput, match="already registered"):
            register(spec)
        with pytest.raises(InvalidInput, match="needs the models"):
            M.evaluate("stitching_test", np.eye(3), np.eye(3))
    finally:
        REGISTRY.pop("stitching_test")
    with pytest.raises(InvalidInput, match="needs from_moments"):
        MeasureSpec(name="bad", func=lambda x, y: 0.0, kind="similarity", value_range=(0, 1),
                    route="moments", citation="x")
    with pytest.raises(TypeError):  # specs are built by keyword: no positional bare booleans
        MeasureSpec("bad", lambda x, y: 0.0, "similarity", (0, 1), "moments", {}, "x")


# ---------------------------------------------------------------- stderr, routes, inputs
def test_stderr_equals_textbook_jackknife_over_contiguous_shards(pair) -> None:
    x, y = pair
    value, se = M.linear_cka(x, y, stderr=True, shards=5)
    edges = np.linspace(0, x.shape[0], 6).round().astype(int)
    loo = []
    for a, b in itertools.pairwise(edges):
        keep = np.r_[0:a, b:x.shape[0]]
        loo.append(cka_textbook(x[keep] @ x[keep].T, y[keep] @ y[keep].T))
    loo_a = np.array(loo)
    ref = np.sqrt(4 / 5 * np.sum((loo_a - loo_a.mean()) ** 2))
    assert value == pytest.approx(M.linear_cka(x, y), rel=1e-12)
    assert se == pytest.approx(ref, rel=1e-8) and se > 0
    for name in ("procrustes", "mean_cca", "gulp", "debiased_cka"):
        _, s = getattr(M, name)(x, y, stderr=True)
        assert np.isfinite(s) and s > 0
    with pytest.raises(InvalidInput, match="moments route only"):
        M.evaluate("rsa", x, y, stderr=True)


def test_choose_route_cost_model() -> None:
    assert M.choose_route(100_000, [768, 768]) == "moments"
    assert M.choose_route(500, [768] * 13) == "gram"
    assert M.choose_route(60_000, [4096] * 13) == "moments"  # Grams would not fit in memory
    with pytest.raises(InvalidInput):
        M.choose_route(0, [3])
    x, y = related_pair(20, 50, 40, seed=1)
    assert M.evaluate("linear_cka", x, y, route="auto").route == "gram"


def test_torch_inputs_of_every_float_dtype() -> None:
    torch = pytest.importorskip("torch", reason="torch is a runtime dependency")
    x, y = related_pair(80, 6, 5, seed=14)
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        tx, ty = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
        ref = M.linear_cka(tx.double().numpy(), ty.double().numpy())
        assert M.linear_cka(tx, ty) == pytest.approx(ref, rel=1e-12)
        assert M.rsa(tx, ty) == pytest.approx(M.rsa(tx.double().numpy(), ty.double().numpy()), rel=1e-12)


# ---------------------------------------------------------------- degenerate input
ALL = sorted(n for n in REGISTRY if REGISTRY[n].route != "model")


@pytest.mark.parametrize("name", ALL)
def test_zero_matrix_is_a_typed_error_or_defined_value(name: str) -> None:
    x = activations(40, 5, 1)
    z = np.zeros((40, 5))
    for a, b in ((z, x), (x, z)):
        try:
            value = REGISTRY[name].func(a, b)
        except MeasureError as exc:
            assert "zero" in str(exc) or "constant" in str(exc) or "undefined" in str(exc)
        else:
            assert np.isfinite(value)
            assert (name, value) == ("linear_regression", 0.0)  # only R² of a zero X is defined


@pytest.mark.parametrize("name", ALL)
def test_too_few_rows_and_nonfinite(name: str) -> None:
    with pytest.raises(MeasureError, match=r"rows|undefined"):
        REGISTRY[name].func(np.ones((1, 3)), np.ones((1, 2)))
    x = activations(30, 4, 2)
    bad = x.copy()
    bad[7, 2] = np.inf
    with pytest.raises(NonFinite, match="row 7"):
        REGISTRY[name].func(x, bad)
    with pytest.raises(InvalidInput, match="same rows"):
        REGISTRY[name].func(x, x[:-1])


def test_constant_column_and_rank_deficiency_give_defined_values() -> None:
    x, y = related_pair(120, 6, 5, seed=15)
    xc = np.column_stack([x, np.full(120, 3.0)])  # a constant column adds nothing
    xr = np.column_stack([x, x[:, :2] @ [[1.0], [2.0]]])  # rank-deficient: a dependent column
    for name in ("mean_cca", "svcca", "pwcca", "linear_regression", "gulp", "linear_cka", "procrustes"):
        for variant in (xc, xr):
            v = REGISTRY[name].func(variant, y)
            assert np.isfinite(v)
    assert M.mean_cca(xc, y) == pytest.approx(M.mean_cca(x, y), rel=1e-9)
    assert M.mean_cca(xr, y) == pytest.approx(M.mean_cca(x, y), rel=1e-9)
    assert M.linear_regression(xr, y) == pytest.approx(M.linear_regression(x, y), rel=1e-9)
    assert M.linear_cka(xc, y) == pytest.approx(M.linear_cka(x, y), rel=1e-12)


def test_constant_rows_fail_rsa_and_knn_with_reason() -> None:
    x = activations(30, 4, 3)
    x[5] = 2.0
    with pytest.raises(MeasureError, match="row 5 is constant"):
        M.rsa(x, x)
    x[5] = 0.0
    with pytest.raises(MeasureError, match="row 5 is all zeros"):
        M.knn_overlap(x, x)
    with pytest.raises(MeasureError, match="k < rows"):
        M.knn_overlap(x, x, k=30)
