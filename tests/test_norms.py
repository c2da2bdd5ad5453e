"""scaling.norms: operator norms of (fan_in, fan_out) kernels, batched over leading axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling import norms

G = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)  # a (fan_in=2, fan_out=3) kernel
RNG = np.random.default_rng(0)
spectral = jax.jit(norms.spectral, static_argnames=("method", "iters"))
role_norm = jax.jit(norms.role_norm, static_argnums=1)


def test_hand_computed_values():
    sigma_max = np.linalg.svd(G, compute_uv=False)[0]
    np.testing.assert_allclose(norms.spectral(G), sigma_max, rtol=1e-6)
    np.testing.assert_allclose(norms.rms_to_rms(G), np.sqrt(2 / 3) * sigma_max, rtol=1e-6)
    # output: one column per vocabulary item -> sqrt(fan_in) * largest column l2 norm = sqrt(2) * ||(3, 6)||
    np.testing.assert_allclose(norms.rms_to_inf(G), np.sqrt(2) * np.sqrt(45), rtol=1e-6)
    # embedding: one row per token -> largest row RMS = ||(4, 5, 6)|| / sqrt(3)
    np.testing.assert_allclose(norms.l1_to_rms(G), np.sqrt(77 / 3), rtol=1e-6)


def test_batched_over_leading_axes_equals_per_matrix():
    w = RNG.standard_normal((2, 3, 5, 7)).astype(np.float32)
    for fn in (norms.spectral, norms.rms_to_rms, norms.rms_to_inf, norms.l1_to_rms):
        fn = jax.jit(fn)
        batched = np.asarray(fn(w))
        assert batched.shape == (2, 3)
        per_matrix = np.array([[float(fn(w[i, j])) for j in range(3)] for i in range(2)])
        np.testing.assert_allclose(batched, per_matrix, rtol=1e-5)


def test_lanczos_matches_svd_and_power_is_a_lower_bound():
    tall = RNG.standard_normal((3, 160, 100)).astype(np.float32)  # Gaussian: the hardest case, crowded top
    for w in (tall, np.swapaxes(tall, -1, -2)):  # Lanczos runs on the smaller Gram matrix (100 > its 64 steps)
        exact = np.linalg.svd(w, compute_uv=False)[..., 0]
        np.testing.assert_allclose(spectral(w, method="lanczos"), exact, rtol=1e-5)
    power = np.asarray(spectral(tall, method="power"))
    assert np.all(power <= exact * (1 + 1e-6)) and np.all(power >= 0.9 * exact)


def test_anchor_inits_have_norm_one():
    """The inits of Filatov et al. (arXiv 2510.03871) sit at norm 1 in their role's norm."""
    key = jax.random.PRNGKey(2)  # jax's own orthogonal initializer, as the parametrization uses
    for fi, fo in ((32, 128), (128, 32), (64, 64)):
        w = jax.nn.initializers.orthogonal(scale=np.sqrt(fo / fi))(key, (fi, fo))
        np.testing.assert_allclose(role_norm(w, "hidden"), 1.0, rtol=1e-5)
    d, vocab = 32, 50
    emb = RNG.standard_normal((vocab, d))
    emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True) * np.sqrt(d)  # rows ||.|| = sqrt(d)
    np.testing.assert_allclose(role_norm(emb, "embedding"), 1.0, rtol=1e-5)
    out = RNG.standard_normal((d, vocab))
    out = out / np.linalg.norm(out, axis=0, keepdims=True) / np.sqrt(d)  # vocab vectors ||.|| = 1/sqrt(d)
    np.testing.assert_allclose(role_norm(out, "output"), 1.0, rtol=1e-5)


def test_role_norm_routes_by_role_and_jits():
    w = RNG.standard_normal((4, 16, 24)).astype(np.float32)
    fn = role_norm
    np.testing.assert_allclose(fn(w, "hidden"), norms.rms_to_rms(w, "svd"), rtol=1e-5)
    np.testing.assert_allclose(fn(w, "output"), norms.rms_to_inf(w), rtol=1e-6)
    np.testing.assert_allclose(fn(w, "embedding"), norms.l1_to_rms(w), rtol=1e-6)
    b = jnp.array([[3.0, 4.0], [0.0, 0.0]])  # stacked vectors: RMS of each
    np.testing.assert_allclose(fn(b, "vector"), [np.sqrt(12.5), 0.0], rtol=1e-6)
    assert fn(w, "hidden").shape == (4,)
    with pytest.raises(ValueError, match="role"):
        norms.role_norm(w, "bias")


def test_zero_matrix_has_zero_norm_without_nans():
    z = jnp.zeros((2, 10, 7))
    for method in ("svd", "lanczos", "power"):
        np.testing.assert_array_equal(spectral(z, method=method), 0.0)
