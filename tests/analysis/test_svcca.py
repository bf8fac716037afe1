"""SVCCA: the properties the paper relies on, agreement with two independent CCA computations, and the
layer-by-layer comparison of two networks."""

import json

import jax
import numpy as np
import pytest
import scipy.linalg
from flax import nnx
from sklearn.cross_decomposition import CCA

from ttlx.analysis.svcca import as_matrix, canonical_correlations, chance_level, svcca, svd_reduce
from ttlx.errors import ConfigError


def low_rank(rng, rows=2000, rank=8, width=40, noise=1e-3):
    """Activations whose variance lives in ``rank`` directions, plus a little isotropic noise."""
    signal = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, width))
    return signal + noise * rng.normal(size=(rows, width))


def paired(rng, rows=4000, correlations=(0.95, 0.8, 0.6, 0.3), extra=(3, 2)):
    """X and Y that share latent factors with the given correlations, plus unrelated columns each."""
    k = len(correlations)
    z = rng.normal(size=(rows, k))
    rho = np.asarray(correlations)
    x_lat = z
    y_lat = rho * z + np.sqrt(1 - rho**2) * rng.normal(size=(rows, k))
    x = np.hstack([x_lat, rng.normal(size=(rows, extra[0]))]) @ rng.normal(size=(k + extra[0], k + extra[0]))
    y = np.hstack([y_lat, rng.normal(size=(rows, extra[1]))]) @ rng.normal(size=(k + extra[1], k + extra[1]))
    return x + 5.0, y - 3.0  # offsets: CCA must centre


def test_identical_activations_give_one():
    acts = low_rank(np.random.default_rng(0))
    result = svcca(acts, acts)
    np.testing.assert_allclose(result.coefficients, 1.0, atol=1e-9)
    assert result.mean == pytest.approx(1.0, abs=1e-9)
    assert result.dims[0] == result.dims[1] == 8  # the 99% of variance is in the 8 latent directions


def test_an_invertible_linear_map_still_gives_one():
    rng = np.random.default_rng(1)
    acts = low_rank(rng)
    rotate = [np.linalg.qr(rng.normal(size=(40, 40)))[0] for _ in range(2)]
    mixing = rotate[0] @ np.diag(rng.uniform(0.25, 4.0, 40)) @ rotate[1]  # reweighs directions too
    assert svcca(acts, acts @ mixing + 2.0).mean > 0.999
    # without the SVD cut, CCA is exactly invariant to any invertible map
    full = rng.normal(size=(500, 12))
    np.testing.assert_allclose(canonical_correlations(full, full @ rng.normal(size=(12, 12))), 1.0, atol=1e-8)


def test_independent_noise_gives_values_near_zero():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5000, 20)), rng.normal(size=(5000, 30))
    result = svcca(a, b)
    # spurious correlation of k directions over n points is of order sqrt(k / n), here 0.06-0.08
    assert result.mean < 0.1
    assert result.coefficients.max() < 0.16
    assert chance_level(a, b) < 0.1


def test_canonical_correlations_agree_with_the_covariance_eigenproblem():
    rng = np.random.default_rng(3)
    x, y = paired(rng)
    ours = canonical_correlations(x, y)
    # independent route: rho^2 are the eigenvalues of Sxx^-1 Sxy Syy^-1 Syx
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    m = scipy.linalg.solve(sxx, sxy) @ scipy.linalg.solve(syy, sxy.T)
    reference = np.sqrt(np.clip(np.sort(np.linalg.eigvals(m).real)[::-1][: len(ours)], 0, 1))
    np.testing.assert_allclose(ours, reference, atol=1e-8)
    # and the planted correlations are recovered
    np.testing.assert_allclose(ours[:4], [0.95, 0.8, 0.6, 0.3], atol=0.03)


def test_canonical_correlations_agree_with_sklearn_cca():
    rng = np.random.default_rng(4)
    x, y = paired(rng, correlations=(0.9, 0.6), extra=(1, 1))
    cca = CCA(n_components=2, scale=False, max_iter=5000, tol=1e-12).fit(x, y)
    xs, ys = cca.transform(x, y)
    reference = [abs(np.corrcoef(xs[:, i], ys[:, i])[0, 1]) for i in range(2)]
    np.testing.assert_allclose(canonical_correlations(x, y)[:2], reference, atol=1e-4)


def test_svd_keeps_the_directions_that_explain_the_requested_variance():
    rng = np.random.default_rng(5)
    basis, _ = np.linalg.qr(rng.normal(size=(1000, 4)) - 0)
    basis -= basis.mean(0)
    basis, _ = np.linalg.qr(basis)  # orthonormal, centred columns: variance shares are exactly s^2 / sum
    acts = (basis * np.sqrt([90.0, 9.0, 0.9, 0.1])) @ np.linalg.qr(rng.normal(size=(4, 4)))[0]
    assert svd_reduce(acts, 0.9).shape == (1000, 1)
    assert svd_reduce(acts, 0.99).shape == (1000, 2)
    assert svd_reduce(acts, 0.995).shape == (1000, 3)
    assert svd_reduce(np.ones((50, 3)), 0.99).shape == (50, 0)  # a constant layer keeps nothing


def test_conv_maps_are_examples_times_positions_by_channels():
    maps = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    matrix = as_matrix(maps)
    assert matrix.shape == (24, 5)
    np.testing.assert_array_equal(matrix[13], maps[1, 0, 1])


def test_too_few_data_points_is_refused_with_advice():
    rng = np.random.default_rng(6)
    with pytest.raises(ConfigError, match=r"SVCCA needs more data points \(20\) than kept directions"):
        svcca(rng.normal(size=(20, 15)), rng.normal(size=(20, 15)))


def test_compare_layers_of_a_network_with_itself_and_with_another(tmp_path, tinynet):
    from ttlx.analysis.compare import compare_layers, write_svcca
    from ttlx.models import create_model

    net = create_model("tinynet", -1, head=None, image_size=32, seed=0)
    other = nnx.clone(net)  # another network of the same shapes: new random weights
    rng = np.random.default_rng(1)
    nnx.update(other, jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), nnx.state(other, nnx.Param)))
    batches = [{"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32), "mask": np.ones(8)}
               for _ in range(3)]
    batches[-1]["mask"][5:] = 0  # padding rows never count
    same = compare_layers(net, net, batches, positions=16)
    assert list(same) == ["stem", "layer1.0", "layer2.0", "layer2.1", "layer3.0"]
    for name, entry in same.items():
        assert entry["mean"] == pytest.approx(1.0, abs=1e-6), name
        assert entry["rows"] == 21 * 16  # 21 real images x 16 positions (layer3.0 has exactly 16)
    different = compare_layers(net, other, batches, positions=16)
    assert all(different[n]["mean"] < 0.99 for n in different)
    assert all(different[n]["chance"] < different[n]["mean"] for n in different)
    json_path, png_path = write_svcca(different, tmp_path)
    saved = json.loads(json_path.read_text())
    assert saved["layer3.0"]["coefficients"] == pytest.approx(different["layer3.0"]["coefficients"])
    assert png_path.stat().st_size > 5000
