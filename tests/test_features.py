"""The pixel feature bank against an independent float64 scipy model of ilastik-numerics.md §1-§5."""

import math
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage

from hpc_ilastik.errors import UserError
from hpc_ilastik.pixel.features import (
    FeatureSelection,
    compute_features,
    feature_sigma,
    plan_features,
    presmoothing_sigma,
)
from hpc_ilastik.pixel.filters import (
    _MAX_OUTPUTS,
    _separable_bank,
    derivative_bank,
    eigenvalues,
    gaussian_smoothing,
    gradient,
    hessian,
    hessian_orders,
)
from hpc_ilastik.pixel.kernels import FEATURE_WINDOW, PRESMOOTH_WINDOW, gaussian_kernel, kernel_radius

ALL_IDS = (
    "GaussianSmoothing",
    "LaplacianOfGaussian",
    "GaussianGradientMagnitude",
    "DifferenceOfGaussians",
    "StructureTensorEigenvalues",
    "HessianOfGaussianEigenvalues",
)
DEFAULT_SCALES = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
TEST_SCALES = (0.3, 0.7, 1.0, 1.6, 3.5, 10.0)
EIGEN = ("StructureTensorEigenvalues", "HessianOfGaussianEigenvalues")


# ----------------------------------------------------------------------------- independent model
def model_kernel(sigma, order, window):
    """The kernel formulas of ilastik-numerics.md §3, written out again for the model."""
    r = 0 if sigma < 1e-6 else int(np.floor(window * sigma + 0.5))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2 * sigma * sigma)) if r else np.ones(1)
    if order == 0:
        return g / g.sum()
    if order == 1:
        k = -x * g
        return k / np.dot(k, -x)
    k = (x * x / sigma**2 - 1) * g
    k = k - k.mean()
    return k / np.dot(k, x * x / 2)


def model_filter(img, sigma, window, axes, orders=None):
    """float64 separable filter with scipy's mirror border; orders[i] = derivative along axes[i]."""
    out = np.asarray(img, np.float64)
    for i, axis in enumerate(axes):
        k = model_kernel(sigma, orders[i] if orders else 0, window)
        out = ndimage.convolve1d(out, k, axis=axis, mode="mirror") if k.size > 1 else out * k[0]
    return out


def model_feature(img, fid, scale, pre_axes, feat_axes):
    """One feature of a zyx float32 image as ilastik computes it: (z, y, x, n) float32."""
    s_pre = math.sqrt(scale**2 - 1) if scale > 1 else scale
    sf = min(scale, 1.0)
    pre = model_filter(img, s_pre, 3.5, pre_axes).astype(np.float32)
    n = len(feat_axes)

    def deriv(sigma, *order_axes):
        orders = [order_axes.count(a) for a in range(n)]
        return model_filter(pre, sigma, 2.0, feat_axes, orders)

    if fid == "GaussianSmoothing":
        chans = [deriv(sf)]
    elif fid == "LaplacianOfGaussian":
        chans = [sum(deriv(sf, a, a) for a in range(n))]
    elif fid == "GaussianGradientMagnitude":
        chans = [np.sqrt(sum(deriv(sf, a) ** 2 for a in range(n)))]
    elif fid == "DifferenceOfGaussians":
        chans = [deriv(sf) - deriv(0.66 * sf)]
    else:
        if fid == "StructureTensorEigenvalues":
            g = [deriv(sf / 2, a) for a in range(n)]
            entry = {(a, b): model_filter(g[a] * g[b], sf, 2.0, feat_axes) for a in range(n) for b in range(a, n)}
        else:
            entry = {(a, b): deriv(sf, a, b) for a in range(n) for b in range(a, n)}
        m = np.empty(img.shape + (n, n))
        for (a, b), v in entry.items():
            m[..., a, b] = m[..., b, a] = v
        return np.linalg.eigvalsh(m)[..., ::-1].astype(np.float32)
    return np.stack(chans, axis=-1).astype(np.float32)


def assert_feature_close(ours, ref, input_range):
    """numerics §6: |diff| <= 1e-3·max|feature| + 1e-6·input range (which also covers the float32 noise,
    ~sqrt(eps)·scale, of near-degenerate 3-D eigenvalues that fastfilters' solver and ours share)."""
    diff = np.abs(ours.astype(np.float64) - ref)
    tol = 1e-3 * np.abs(ref).max() + 1e-6 * input_range
    assert (diff <= tol).all(), f"max |diff| {diff.max():.3g} > tolerance {tol:.3g} at {(diff > tol).sum()} values"


def one_feature_selection(fid, scales, compute_in_2d=None):
    matrix = tuple(tuple(f == fid for _ in scales) for f in ALL_IDS)
    return FeatureSelection(ALL_IDS, tuple(scales), matrix, compute_in_2d)


@pytest.fixture(scope="module")
def image_2d(fixtures_dir):
    """A real 2-D uint8 image (ilastik's own test data), cropped so that σ=10 still fits."""
    return iio.imread(fixtures_dir / "api" / "Data_1channel.png")[20:100, 10:98]


@pytest.fixture(scope="module")
def image_3d(fixtures_dir):
    """A real 3-D uint8 volume (ilastik's own test data), cropped to keep the float64 model quick."""
    return np.load(fixtures_dir / "api" / "Data_3D.npy")[10:50, 4:44, 8:50, 0]


# ----------------------------------------------------------------------------- kernels
def test_kernel_radius_rule():
    presmoothing = [math.sqrt(s * s - 1) if s > 1 else s for s in DEFAULT_SCALES]
    assert [kernel_radius(s, 3.5) for s in presmoothing] == [1, 2, 4, 4, 12, 17, 35]
    assert [kernel_radius(min(s, 1.0), 2.0) for s in DEFAULT_SCALES] == [1, 1, 2, 2, 2, 2, 2]
    assert kernel_radius(0.66 * 0.3, 2.0) == 0  # DoG's second Gaussian at σ=0.3: the identity
    assert kernel_radius(0.35, 2.0) == 1  # structure tensor gradient at σ=0.7
    assert kernel_radius(1e-7, 3.5) == 0
    np.testing.assert_array_equal(gaussian_kernel(0.198, 0, 2.0), [1.0])


@pytest.mark.parametrize("sigma", [0.3, 0.7, 1.0, 1.6, 3.35, 9.95])
@pytest.mark.parametrize("window", [2.0, 3.5])
def test_kernel_normalisation_through_convolution(sigma, window):
    r = kernel_radius(sigma, window)
    n = 4 * r + 8
    x = np.arange(n, dtype=np.float32)
    inner = (slice(None), slice(None), slice(r + 1, n - r - 1))
    ramp = np.broadcast_to(x, (1, 2, n)).copy()
    half_square = np.broadcast_to(x * x / 2, (1, 2, n)).astype(np.float32)

    k0, k1, k2 = (gaussian_kernel(sigma, o, window) for o in (0, 1, 2))
    assert k0.size == k1.size == k2.size == 2 * r + 1
    assert k0.sum() == pytest.approx(1.0, abs=1e-7)  # float32 taps, as fastfilters'
    assert k2.sum() == pytest.approx(0.0, abs=1e-7)  # DC removed
    along_x = {order: derivative_bank(img, sigma, window, (2,), [(order,)])[(order,)]
               for img, order in ((ramp, 1), (half_square, 2), (ramp, 0))}
    np.testing.assert_allclose(along_x[1][inner], 1.0, rtol=1e-5)
    np.testing.assert_allclose(along_x[2][inner], 1.0, rtol=1e-4)
    np.testing.assert_allclose(along_x[0][inner], ramp[inner], rtol=1e-6)


def test_gaussian_smoothing_is_fastfilters_to_the_last_bit():
    """The smoothing of a single bright pixel is the kernel itself: ours equals fastfilters' (the real ilastik's
    filters, stored in tests/data/fastfilters_gaussian.h5) bit for bit, with ilastik's feature window and with
    fastfilters' default one (the multicut watershed's)."""
    from hpc_ilastik.graphs.watershed import fastfilters_gaussian

    with h5py.File(Path(__file__).parent / "data" / "fastfilters_gaussian.h5", "r") as f:
        sigmas, feature_window, default_window = f["sigmas"][()], f["window_3.5"][()], f["default_window"][()]
    delta = np.zeros((1, 121, 121), np.float32)
    delta[0, 60, 60] = 1
    for sigma, with_feature_window, with_default_window in zip(sigmas, feature_window, default_window):
        np.testing.assert_array_equal(gaussian_smoothing(delta, sigma, 3.5, (1, 2))[0, 60], with_feature_window)
        np.testing.assert_array_equal(fastfilters_gaussian(delta[0], sigma)[60], with_default_window)


def test_zero_width_derivative_kernel_is_nan():
    assert np.isnan(gaussian_kernel(0.15, 1, 2.0)).all()  # ST gradient at σ=0.3 (fastfilters: NaN)
    plan = plan_features(one_feature_selection("StructureTensorEigenvalues", (0.3,)), (1, 20, 20), 1)
    assert np.isnan(compute_features(np.ones((1, 20, 20, 1), np.uint8), plan)).all()


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_one_axis_is_scipy_mirror(axis, order):
    rng = np.random.default_rng(axis * 3 + order)
    img = rng.uniform(0, 255, (7, 9, 11)).astype(np.float32)
    for sigma in (0.7, 2.0, 6.0):  # 6.0: kernel longer than the line, mirrored repeatedly
        ref = ndimage.convolve1d(img.astype(np.float64), gaussian_kernel(sigma, order, 3.5), axis=axis, mode="mirror")
        np.testing.assert_allclose(derivative_bank(img, sigma, 3.5, (axis,), [(order,)])[(order,)], ref,
                                   atol=2e-5 * 255)


def test_a_bank_on_a_region_equals_scipys_separable_filters_cut_to_it():
    """Every output of one streamed bank equals scipy's separable filters on the whole image, cut to the region."""
    img = np.random.default_rng(4).uniform(0, 255, (6, 20, 22)).astype(np.float32)
    region = ((1, 5), (0, 17), (3, 22))
    cut = tuple(slice(lo, hi) for lo, hi in region)
    orders = [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    bank = derivative_bank(img, 1.6, 2.0, (1, 2), orders, region)
    for oy, ox in orders:
        ky, kx = gaussian_kernel(1.6, oy, 2.0), gaussian_kernel(1.6, ox, 2.0)
        ref = ndimage.convolve1d(ndimage.convolve1d(img.astype(np.float64), kx, 2, mode="mirror"), ky, 1, mode="mirror")
        np.testing.assert_allclose(bank[(oy, ox)], ref[cut], atol=1e-5 * 255)


@pytest.mark.parametrize("radius, padded_radius", [(1, 5), (2, 5), (4, 5), (12, 13)])
def test_the_x_pass_output_by_output_equals_a_tap_at_a_time(radius, padded_radius):
    """The radii that go in as constants (each output's sum in a register) give the bits of the tap-at-a-time
    loop of any other radius: the same kernel with zero taps added (each a fused multiply-add of 0, exact) goes
    through that loop. Rows inside the image and rows mirrored at either end of x."""
    img = np.random.default_rng(radius).uniform(0, 255, (3, 9, 40)).astype(np.float32)
    identity = np.ones((1, 1), np.float32)
    taps = np.random.default_rng(0).uniform(-0.3, 0.3, (3, radius + 1)).astype(np.float32)
    padded = np.concatenate([taps, np.zeros((3, padded_radius - radius), np.float32)], axis=1)  # not a constant
    antisym = np.array([False, True, False])
    keys = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2]])
    for lo, width in ((radius + 1, 10), (0, 40), (30, 10)):
        outputs = []
        for table in (taps, padded):
            out = tuple(np.empty((3, 9, width), np.float32) for _ in keys)
            _separable_bank(img, (identity, identity, table), (antisym[:1], antisym[:1], antisym), keys,
                            np.array([0, 0, lo]), out + (np.empty((0, 0, 0), np.float32),) * (_MAX_OUTPUTS - len(keys)))
            outputs.append(out)
        for by_output, by_tap in zip(*outputs):
            np.testing.assert_array_equal(by_output, by_tap)


@pytest.mark.parametrize("z_size, z_region", [(29, (3, 27)), (21, (0, 21)), (40, (17, 40)), (9, (2, 9))])
def test_the_streamed_z_pass_equals_scipy(z_size, z_region):
    """Output planes filtered along z from the bank's ring of source planes: each reads the right planes,
    mirrored at either end of z, for regions that start and stop inside the image or at its edges."""
    img = np.random.default_rng(z_size).uniform(0, 255, (z_size, 6, 7)).astype(np.float32)
    region = (z_region, (0, 6), (1, 7))
    orders = [(0, 0, 0), (1, 0, 0), (2, 0, 0), (1, 1, 0), (0, 0, 1)]
    for sigma in (1.0, 2.5):  # radius 4 and 9 of window 3.5: rings of 2r + 1 planes, mirrored at both ends
        bank = derivative_bank(img, sigma, 3.5, (0, 1, 2), orders, region)
        for order in orders:
            ref = img.astype(np.float64)
            for axis, o in enumerate(order):
                ref = ndimage.convolve1d(ref, gaussian_kernel(sigma, o, 3.5), axis=axis, mode="mirror")
            np.testing.assert_allclose(bank[order], ref[tuple(slice(lo, hi) for lo, hi in region)], atol=2e-5 * 255)


def _fastfilters_ev3d(upper: list[np.ndarray]) -> np.ndarray:
    """fastfilters' _ev3d_avx2 (linalg_avx2.c with avx_mathfun.h's atan2_256_ps and sincos256_ps, built
    without FMA), transcribed lane-wise in numpy float32: every operation rounded on its own."""
    f = np.float32
    a = [np.asarray(u, f) for u in upper]
    mx = np.maximum  # _mm256_max_ps/_min_ps agree with np.maximum/np.minimum away from NaN
    m = mx(mx(mx(abs(a[0]), abs(a[1])), mx(abs(a[2]), abs(a[3]))), mx(abs(a[4]), abs(a[5])))
    m = np.where(m == 0, f(1), m)
    b00, b01, b02, b11, b12, b22 = (v / m for v in a)
    two, half, inv3 = f(2), f(0.5), f(1 / 3)
    c0 = (b00 * b11) * b22 + ((two * b01) * b02) * b12 - (b00 * b12) * b12 - (b11 * b02) * b02 - (b22 * b01) * b01
    c1 = b00 * b11 - b01 * b01 + b00 * b22 - b02 * b02 + b11 * b22 - b12 * b12
    c2 = b00 + b11 + b22
    c2_3 = c2 * inv3
    a_3 = np.minimum((c1 - c2 * c2_3) * inv3, f(0))
    mb_2 = half * (c0 + c2_3 * ((two * c2_3) * c2_3 - c1))
    q = np.minimum(mb_2 * mb_2 + (a_3 * a_3) * a_3, f(0))
    # atan2_256_ps(y, x) for y = sqrt(-q) >= 0
    y, x = np.sqrt(-q), mb_2
    swap = abs(y) > abs(x)
    xs, ys = np.where(swap, abs(y), abs(x)), np.where(swap, -abs(x), abs(y))
    with np.errstate(invalid="ignore", divide="ignore"):
        s = ys / xs
    t = s * s
    u = f(0.00282363896258175373077393)
    for c in (-0.0159569028764963150024414, 0.0425049886107444763183594, -0.0748900920152664184570312,
              0.106347933411598205566406, -0.142027363181114196777344, 0.199926957488059997558594,
              -0.333331018686294555664062):
        u = t * u + f(c)
    qq = np.where(np.signbit(x), f(-2), f(0)) + np.where(swap, f(1), f(0))
    angle = qq * f(math.pi / 2) + ((t * s) * u + s)
    angle = np.where(np.signbit(x), -angle, angle)
    angle = np.where(xs == 0, f(math.pi / 2), angle)
    angle = np.where(ys == 0, np.where(np.signbit(x), f(math.pi), f(0)), angle)  # the swapped operands
    angle = np.where(np.signbit(y), -angle, angle) * inv3
    # sincos256_ps (the angle is negative when sqrt(-q) is -0.0)
    negative = np.signbit(angle)
    angle = abs(angle)
    j = (np.trunc(angle * f(1.27323954473516)).astype(np.int32) + 1) & -2
    jf = j.astype(f)
    r = angle + jf * f(-0.78515625)
    r = r + jf * f(-2.4187564849853515625e-4)
    r = r + jf * f(-3.77489497744594108e-8)
    z = r * r
    cp = ((f(2.443315711809948e-5) * z + f(-1.388731625493765e-3)) * z + f(4.166664568298827e-2)) * z
    cp = (cp * z - z * half) + f(1)
    sp = ((f(-1.9515295891e-4) * z + f(8.3321608736e-3)) * z + f(-1.6666654611e-1)) * z
    sp = sp * r + r
    sine_poly = (j & 2) == 0
    sn = np.where(sine_poly, sp, cp)
    cs = np.where(sine_poly, cp, sp)
    sn = np.where(negative != ((j & 4) != 0), -sn, sn)
    cs = np.where(((j - 2) & 4) == 0, -cs, cs)
    mag = np.sqrt(-a_3)
    r0 = c2_3 + (two * mag) * cs
    r1 = c2_3 - mag * (cs + np.sqrt(f(3)) * sn)
    r2 = c2_3 - mag * (cs - np.sqrt(f(3)) * sn)
    return np.sort(np.stack([r0, r1, r2]), axis=0)[::-1] * m


def test_eigenvalues_are_fastfilters_own_float32_solvers():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(20000, 3, 3)).astype(np.float32)
    m = m + np.swapaxes(m, 1, 2)
    m[:6] = [np.zeros((3, 3)), np.eye(3), np.diag([2.0, 2.0, -1.0]), np.diag([-3.0, 1.0, 1.0]), np.ones((3, 3)),
             np.diag([1.0, 0.0, -1.0])]
    upper3 = [m[:, i, j] for i in range(3) for j in range(i, 3)]
    upper2 = [m[:, i, j] for i in range(2) for j in range(i, 2)]
    got3, got2 = eigenvalues(upper3), eigenvalues(upper2)
    assert got3.dtype == got2.dtype == np.float32
    assert (np.diff(got3, axis=0) <= 0).all() and (np.diff(got2, axis=0) <= 0).all()  # largest first
    # bit for bit what fastfilters computes
    np.testing.assert_array_equal(got3, _fastfilters_ev3d(upper3))
    a, b, c = (u.astype(np.float32) for u in upper2)
    mean, root = (a + c) * np.float32(0.5), np.sqrt(((a - c) * np.float32(0.5)) ** 2 + b * b)
    np.testing.assert_array_equal(got2, np.stack([mean + root, mean - root]))
    # and how far that is from the exact eigenvalues: float32 rounding, near-degenerate 3x3 ones ~sqrt(eps)
    # (all but the matrix below)
    for got, sub, tol in [(got3[:, 6:], m[6:], 5e-4), (got2, m[:, :2, :2], 6e-7)]:
        exact = np.linalg.eigvalsh(sub.astype(np.float64))[:, ::-1].T
        assert (np.abs(got - exact) <= tol * np.abs(sub).max(axis=(1, 2))).all()
    np.testing.assert_allclose(got3[:, :5].T, [[0, 0, 0], [1, 1, 1], [2, 2, -1], [1, 1, -3], [3, 0, 0]], atol=1e-3)
    np.testing.assert_array_equal(got3[:, 0], 0.0)
    # fastfilters' atan2 tests x == 0 and y == 0 after swapping its operands: atan2(y > 0, 0) = 0, not pi/2,
    # so diag(1, 0, -1) (mb/2 = 0) comes out as 2/sqrt(3), -1/sqrt(3), -1/sqrt(3), as in ilastik
    np.testing.assert_allclose(got3[:, 5], [2 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)], rtol=1e-6)


# ----------------------------------------------------------------------------- features vs the model
@pytest.mark.parametrize("fid", ALL_IDS)
def test_features_2d_match_model(fid, image_2d):
    scales = TEST_SCALES if fid == "GaussianSmoothing" else TEST_SCALES[1:]
    img = image_2d[None].astype(np.float32)
    plan = plan_features(one_feature_selection(fid, scales), img.shape, 1)
    ours = compute_features(image_2d[None, ..., None], plan)
    n = 2 if fid in EIGEN else 1
    assert ours.shape == img.shape + (n * len(scales),)
    for j, s in enumerate(scales):
        ref = model_feature(img, fid, s, (1, 2), (1, 2))
        assert_feature_close(ours[..., j * n:(j + 1) * n], ref, 255)


@pytest.mark.parametrize("fid", ALL_IDS)
def test_features_3d_match_model(fid, image_3d):
    scales = TEST_SCALES if fid == "GaussianSmoothing" else TEST_SCALES[1:]
    img = image_3d.astype(np.float32)
    plan = plan_features(one_feature_selection(fid, scales), img.shape, 1)
    ours = compute_features(image_3d[..., None], plan)
    n = 3 if fid in EIGEN else 1
    assert ours.shape == img.shape + (n * len(scales),)
    for j, s in enumerate(scales):
        ref = model_feature(img, fid, s, (0, 1, 2), (0, 1, 2))
        got = ours[..., j * n:(j + 1) * n]
        if n == 3:
            # fastfilters' float32 cubic clamps a slightly positive discriminant to 0 and returns a double root: where
            # the exact eigenvalues lie within 2 % of the largest |eigenvalue| of each other, the float32 answer can
            # be off by their gap (its solver and ours share this); elsewhere the usual tolerance holds
            scale = np.abs(ref).max()
            near = np.diff(np.sort(ref, axis=-1), axis=-1).min(axis=-1) < 0.02 * scale
            got, ref = got.copy(), ref.copy()
            assert (np.abs(got[near] - ref[near]) <= 0.01 * scale).all()
            got[near] = ref[near]
        assert_feature_close(got, ref, 255)


def test_3d_magnitude_and_laplacian_add_x_first_as_fastfilters_does(image_3d):
    """fastfilters combines the per-axis terms as ((x + y) + z) in float32 (x the last, contiguous axis):
    the same rounding, bit for bit."""
    img = image_3d.astype(np.float32)
    scale = 1.6
    pre = gaussian_smoothing(img, presmoothing_sigma(scale), PRESMOOTH_WINDOW, (0, 1, 2))
    sigma = feature_sigma(scale)
    gz, gy, gx = gradient(pre, sigma, FEATURE_WINDOW, (0, 1, 2))
    hessian_entries = dict(zip(hessian_orders(3), hessian(pre, sigma, FEATURE_WINDOW, (0, 1, 2))))
    zz, yy, xx = (hessian_entries[o] for o in [(2, 0, 0), (0, 2, 0), (0, 0, 2)])
    for fid, expected in [("GaussianGradientMagnitude", np.sqrt((gx * gx + gy * gy) + gz * gz)),
                          ("LaplacianOfGaussian", (xx + yy) + zz)]:
        plan = plan_features(one_feature_selection(fid, [scale]), img.shape, 1)
        np.testing.assert_array_equal(compute_features(image_3d[..., None], plan)[..., 0], expected)


def test_compute_in_2d_filters_each_slice(image_3d):
    """ComputeIn2d: presmoothing and features per z slice, 2 eigenvalue channels, names 'in 2D'."""
    sel = FeatureSelection.default(compute_in_2d=(True, False, True, True, False, True, True))
    vol = image_3d[:, :, :, None]
    plan = plan_features(sel, vol.shape[:3], 1)
    ours = compute_features(vol, plan)
    # eigenvalue channels: 3 at the 3-D scales 0.7 and 3.5, 2 at the four 2-D derivative scales
    assert plan.n_channels_out == 7 + 3 * 6 + 2 * (2 * 3 + 4 * 2)
    assert plan.halo[0] == kernel_radius(math.sqrt(3.5**2 - 1), 3.5) + 1 + 2  # 3-D σ=3.5: presmoothing + ST reach
    assert "Gaussian Smoothing (σ=0.3) in 2D" in plan.names
    assert "Gaussian Smoothing (σ=0.7)" in plan.names
    two_d = FeatureSelection.default(compute_in_2d=(True,) * 7)
    plan_2d = plan_features(two_d, (1,) + vol.shape[1:3], 1)
    in_2d = [k for k, name in enumerate(plan.names) if " in 2D" in name]
    assert len(in_2d) == 5 + 3 * 4 + 2 * 4 * 2
    for z in (0, 17, vol.shape[0] - 1):
        slice_features = compute_features(vol[z:z + 1], plan_2d)
        for k in in_2d:
            np.testing.assert_array_equal(ours[z, ..., k], slice_features[0, ..., plan_2d.names.index(plan.names[k])])


def test_compute_in_2d_defaults():
    sel = FeatureSelection.default()
    assert sel.resolved_in_2d(1) == (True,) * 7
    assert sel.resolved_in_2d(64) == (False,) * 7
    plan2 = plan_features(sel, (1, 64, 64), 1)
    plan3 = plan_features(sel, (64, 64, 64), 1)
    assert all(n.endswith(" in 2D") or " in 2D [" in n for n in plan2.names)
    assert not any(" in 2D" in n for n in plan3.names)
    assert all(st.feature_axes == (1, 2) for st in plan2.steps)
    assert all(st.feature_axes == (0, 1, 2) for st in plan3.steps)


def test_small_z_forces_2d_feature_filters():
    """z too small for σf (ceil(2σf)+1 > z): features per slice, presmoothing still 3-D."""
    rng = np.random.default_rng(3)
    vol = rng.uniform(0, 1000, (2, 30, 34)).astype(np.float32)
    sel = FeatureSelection(ALL_IDS, (1.0,), tuple((True,) for _ in ALL_IDS), None)
    with pytest.raises(UserError, match="z size 2"):
        plan_features(sel, vol.shape, 1)  # ilastik's getInvalidScales rejects it first
    plan = plan_features(sel, vol.shape, 1, check=False)
    assert plan.steps[0].presmooth_axes == (0, 1, 2) and plan.steps[0].feature_axes == (1, 2)
    assert plan.n_channels_out == 4 + 2 + 2
    assert plan.halo == (kernel_radius(1.0, 3.5), 4 + 1 + 2, 4 + 1 + 2)  # no feature reach along z
    ours = compute_features(vol[..., None], plan)
    ref = np.concatenate([model_feature(vol, fid, 1.0, (0, 1, 2), (1, 2)) for fid in ALL_IDS], axis=-1)
    for k in range(plan.n_channels_out):
        assert_feature_close(ours[..., k], ref[..., k], 1000)
    # z = 3 is enough for σf = 1: 3-D features
    assert plan_features(sel, (3, 30, 34), 1, check=False).steps[0].feature_axes == (0, 1, 2)


def test_invalid_scales_raise_user_error():
    sel = FeatureSelection.default()
    with pytest.raises(UserError, match=r"\[10.0\].*30 x 40"):
        plan_features(sel, (1, 30, 40), 1)
    with pytest.raises(UserError, match=r"\[1.6, 3.5, 5.0, 10.0\].*z size 5"):
        plan_features(sel, (5, 64, 64), 1)
    plan_features(FeatureSelection.default(compute_in_2d=(True,) * 7), (5, 64, 64), 1)
    small = FeatureSelection(ALL_IDS, DEFAULT_SCALES, tuple((True,) * 3 + (False,) * 4 for _ in ALL_IDS), None)
    assert plan_features(small, (5, 20, 20), 1).n_channels_out == 3 * (4 + 2 * 3)


def test_empty_selection_gives_no_channels():
    plan = plan_features(FeatureSelection((), (), (), None), (3, 10, 12), 2)
    assert (plan.n_channels_out, plan.halo, plan.names) == (0, (0, 0, 0), [])
    assert compute_features(np.zeros((3, 10, 12, 2), np.uint8), plan).shape == (3, 10, 12, 0)


def test_selection_validation():
    with pytest.raises(UserError, match="Unknown pixel feature 'Foo'"):
        FeatureSelection(("Foo",), (1.0,), ((True,),), None)
    with pytest.raises(UserError, match="rows"):
        FeatureSelection(ALL_IDS[:2], (1.0, 2.0), ((True, False),), None)
    with pytest.raises(UserError, match="ComputeIn2d"):
        FeatureSelection(ALL_IDS[:1], (1.0, 2.0), ((True, False),), (True,))


# ----------------------------------------------------------------------------- channel order and names
def read_selection(path):
    with h5py.File(path, "r") as f:
        g = f["FeatureSelections"]
        sel = FeatureSelection.from_arrays(
            g["FeatureIds"][()], g["Scales"][()], g["SelectionMatrix"][()],
            g["ComputeIn2d"][()] if "ComputeIn2d" in g else None,
        )
        names = [n.decode() for n in f["PixelClassification/ClassifierForests/feature_names"][()]]
    return sel, names


def test_channel_count_and_order():
    sel = FeatureSelection.default()
    assert plan_features(sel, (1, 64, 64), 1).n_channels_out == 49
    assert plan_features(sel, (40, 64, 64), 1).n_channels_out == 61
    assert plan_features(sel, (40, 64, 64), 3).n_channels_out == 183
    plan = plan_features(sel, (40, 64, 64), 1)
    firsts = [(o.feature_id, sel.scales[o.column], o.first_channel, o.n_channels) for o in plan.outputs]
    assert firsts[:8] == [("GaussianSmoothing", s, i, 1) for i, s in enumerate(DEFAULT_SCALES)] + [
        ("LaplacianOfGaussian", 0.7, 7, 1)
    ]
    assert firsts[-1] == ("HessianOfGaussianEigenvalues", 10.0, 58, 3)


@pytest.mark.parametrize(
    "project, shape, channels",
    [("notebooks/pc.ilp", (1, 1024, 1344), 1), ("api/PixelClass.ilp", (1, 128, 128), 1),
     ("api/PixelClass3D.ilp", (64, 64, 64), 1)],
)
def test_names_match_ilastik_projects(fixtures_dir, project, shape, channels):
    sel, names = read_selection(fixtures_dir / project)
    plan = plan_features(sel, shape, channels)
    assert plan.names == names
    assert plan.n_channels_out == len(names)


def test_multichannel_order(fixtures_dir, image_2d):
    """Input channel is the outer, feature channel the inner loop within one (feature, scale)."""
    sel, names = read_selection(fixtures_dir / "PixelClassification2d3c.ilp")  # written before ComputeIn2d
    plan = plan_features(sel, (1, 64, 64), 3)
    assert [n.replace(" in 2D", "") for n in plan.names] == names
    rgb = np.stack([image_2d, 255 - image_2d, image_2d[::-1]], axis=-1)[None, :64, :64]
    stack = compute_features(rgb, plan)
    single = plan_features(sel, (1, 64, 64), 1)
    for c in range(3):
        one = compute_features(rgb[..., c:c + 1], single)
        for o, o1 in zip(plan.outputs, single.outputs):
            first = o.first_channel + c * o.n_channels
            np.testing.assert_array_equal(
                stack[..., first:first + o.n_channels], one[..., o1.first_channel:o1.first_channel + o1.n_channels]
            )


def test_input_dtype_converted_without_rescaling(image_2d):
    plan = plan_features(FeatureSelection.default(), (1,) + image_2d.shape, 1)
    ref = compute_features(image_2d[None, ..., None].astype(np.float32), plan)
    np.testing.assert_array_equal(compute_features(image_2d[None, ..., None], plan), ref)
    np.testing.assert_array_equal(compute_features(image_2d[None, ..., None].astype(np.uint16), plan), ref)
    np.testing.assert_array_equal(compute_features(image_2d[None, ..., None].astype(np.float64), plan), ref)


# ----------------------------------------------------------------------------- blockwise = whole image
def blockwise(img, plan, block, halo):
    """Compute block by block on block+halo (clipped at the image border) and crop."""
    out = np.empty(img.shape[:3] + (plan.n_channels_out,), np.float32)
    for start in np.ndindex(*[math.ceil(n / b) for n, b in zip(img.shape[:3], block)]):
        lo = [s * b for s, b in zip(start, block)]
        hi = [min(l + b, n) for l, b, n in zip(lo, block, img.shape[:3])]
        rlo = [max(l - h, 0) for l, h in zip(lo, halo)]
        rhi = [min(h_ + h, n) for h_, h, n in zip(hi, halo, img.shape[:3])]
        feats = compute_features(img[tuple(slice(a, b) for a, b in zip(rlo, rhi))], plan)
        crop = tuple(slice(l - r, h - r) for l, h, r in zip(lo, hi, rlo))
        out[tuple(slice(a, b) for a, b in zip(lo, hi))] = feats[crop]
    return out


@pytest.mark.parametrize(
    "shape, sel, block",
    [
        ((1, 100, 110), FeatureSelection.default(), (1, 32, 40)),
        ((30, 36, 40), FeatureSelection(ALL_IDS, DEFAULT_SCALES[:5], tuple(
            (f == "GaussianSmoothing",) + (True,) * 4 for f in ALL_IDS), None), (12, 14, 17)),
        ((30, 36, 40), FeatureSelection.default(compute_in_2d=(False, False, True, False, True, True, True)),
         (9, 36, 23)),
    ],
)
def test_blockwise_equals_whole_image(shape, sel, block):
    rng = np.random.default_rng(11)
    img = rng.integers(0, 4096, shape + (2,)).astype(np.uint16)
    plan = plan_features(sel, shape, 2)
    whole = compute_features(img, plan)
    np.testing.assert_array_equal(blockwise(img, plan, block, plan.halo), whole)


def test_halo_is_tight():
    """A halo one pixel short of plan.halo changes the result: the halo is exactly the reach."""
    plan = plan_features(FeatureSelection.default(), (1, 100, 110), 1)
    assert plan.halo == (0, 38, 38)  # presmoothing radius 35 (σ=10) + structure tensor reach 1 + 2
    img = np.random.default_rng(2).uniform(0, 255, (1, 100, 110, 1)).astype(np.float32)
    whole = compute_features(img, plan)
    short = blockwise(img, plan, (1, 32, 40), (0, 37, 37))
    assert not np.array_equal(short, whole)
