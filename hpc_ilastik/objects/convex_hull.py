"""vigra's convex hull object features (ilastik's "2D/3D Convex Hull Features"), numpy + numba.

Re-implements `vigra.analysis.extract2DConvexHullFeatures(labels, ignoreLabel=0)` and
`extract3DConvexHullFeatures(...)` following vigra's sources: `include/vigra/accumulator.hxx`
(`ConvexHull`, `ConvexHullFeatures`, the moments `Central<PowerSum<2..4>>`, `UnbiasedSkewness`,
`UnbiasedKurtosis`), `include/vigra/polytope.hxx` (`ConvexPolytope`) and the binding
`vigranumpy/src/core/accumulator-region-singleband.cxx` (`extractConvexHullFeatures`: names, shapes,
zero rows for the ignored label and for labels that do not occur).

What vigra really computes (the source and every cached ilastik value agree):

* The "hull" is the region's bounding box. `ConvexHull::initialize` adds the region centre and
  centre + 0.5 * e_d as N+1 vertices but never calls `close()`, so the polytope has no facets:
  `addExtremeVertex` finds no lit facet and adds nothing, `contains()` (a point is inside when it
  is behind every facet) is true everywhere, and `fill()` labels every pixel of the bounding box.
  HullVolume = bounding-box volume, HullCenter = its centre, Convexity = InputVolume / HullVolume.
* Defects: the bounding-box pixels not of this label (background and other objects alike);
  DefectCount = number of their 4-connected (2-D) / 6-connected (3-D) components;
  DefectCenter = mean coordinate of all defect pixels.
* DefectVolumeMean / Variance (unbiased) / Skewness (vigra's UnbiasedSkewness) / Kurtosis (vigra's
  UnbiasedKurtosis) over the component sizes in scan order; each is 0 unless there are at least
  1 / 2 / 3 / 4 components. Equal sizes with 3+ components give NaN skewness (and kurtosis with
  4+), as vigra does (0 / 0).
* DefectDisplacementMean = sum_k size_k * |centre_k - InputCenter| / (number of defect pixels),
  0 without defects (vigra never initialises the member it sums into; the caches show 0).

One vigra value is undefined: DefectCenter of a region without defects reads an accumulator slot
that was never constructed. In the cached projects it holds the box-relative defect (or hull)
centre of some earlier object, put at this object's box corner (29 of 35 such rows, e.g.
(804.5, 467.5) for a one-pixel object at (784, 458)): heap garbage. Here it is the box's minimum
corner, what vigra returns when that memory is zero (the other 6 rows).

On the 2-D ilastik fixtures every other value, cast to float32, equals the cached one bit for bit.
"""

import numpy as np
from numba import njit

SCALAR_FEATURES = (
    "InputVolume",
    "HullVolume",
    "Convexity",
    "DefectVolumeMean",
    "DefectVolumeVariance",
    "DefectVolumeSkewness",
    "DefectVolumeKurtosis",
    "DefectCount",
    "DefectDisplacementMean",
)
VECTOR_FEATURES = ("InputCenter", "HullCenter", "DefectCenter")
CONVEX_HULL_FEATURES: tuple[str, ...] = SCALAR_FEATURES + VECTOR_FEATURES
_N_SCALARS = len(SCALAR_FEATURES)


@njit(cache=True, nogil=True)
def _region_boxes(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label of a (z, y, x) image: pixel count, coordinate sums, bounding box min and max, in (x, y, z)."""
    count = np.zeros(n, np.int64)
    coord_sum = np.zeros((n, 3), np.float64)
    lo = np.full((n, 3), 2**62, np.int64)
    hi = np.full((n, 3), -1, np.int64)
    nz, ny, nx = labels.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                k = labels[z, y, x]
                if k == 0:
                    continue
                count[k] += 1
                c = (x, y, z)
                for d in range(3):
                    coord_sum[k, d] += c[d]
                    lo[k, d] = min(lo[k, d], c[d])
                    hi[k, d] = max(hi[k, d], c[d])
    return count, coord_sum, lo, hi


@njit(cache=True, nogil=True, error_model="numpy")
def _volume_moments(sizes: np.ndarray) -> tuple[float, float, float, float]:
    """vigra's Mean, UnbiasedVariance, UnbiasedSkewness, UnbiasedKurtosis of the sizes, 0 where too few."""
    n = sizes.size
    if n == 0:
        return 0.0, 0.0, 0.0, 0.0
    total = 0.0
    sum2 = 0.0  # Central<PowerSum<2>>: vigra's running update in pass 1
    for i in range(n):
        total += sizes[i]
        if i > 0:
            m = total / (i + 1)
            sum2 += (i + 1) / i * (m - sizes[i]) ** 2
    mean = total / n
    sum3 = 0.0  # Central<PowerSum<3>> and <4>: pass 2, about the final mean
    sum4 = 0.0
    for i in range(n):
        d = sizes[i] - mean
        sum3 += d**3
        sum4 += d**4
    fn = float(n)
    variance = sum2 / (fn - 1.0) if n > 1 else 0.0
    skewness = 0.0
    if n > 2:
        skewness = np.sqrt(fn * (fn - 1.0)) / (fn - 2.0) * (np.sqrt(fn) * sum3 / sum2**1.5)
    kurtosis = 0.0
    if n > 3:
        biased = fn * sum4 / (sum2 * sum2) - 3.0
        kurtosis = (fn - 1.0) / ((fn - 2.0) * (fn - 3.0)) * ((fn + 1.0) * biased + 6.0)
    return mean, variance, skewness, kurtosis


@njit(cache=True, nogil=True, error_model="numpy")
def _hull_features(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scalar features (n, 9) in SCALAR_FEATURES order and centres (n, 3, 3) [input, hull, defect] in (x, y, z)."""
    count, coord_sum, lo, hi = _region_boxes(labels, n)
    scalars = np.zeros((n, _N_SCALARS), np.float64)
    centers = np.zeros((n, 3, 3), np.float64)
    max_box = 1
    for k in range(1, n):
        if count[k] > 0:
            max_box = max(max_box, (hi[k, 0] - lo[k, 0] + 1) * (hi[k, 1] - lo[k, 1] + 1) * (hi[k, 2] - lo[k, 2] + 1))
    reached = np.empty(max_box, np.bool_)  # per box pixel: already in a defect component
    stack = np.empty(max_box, np.int64)
    sizes = np.empty(max_box, np.float64)
    for k in range(1, n):
        if count[k] == 0:
            continue
        ex, ey, ez = hi[k, 0] - lo[k, 0] + 1, hi[k, 1] - lo[k, 1] + 1, hi[k, 2] - lo[k, 2] + 1
        x0, y0, z0 = lo[k, 0], lo[k, 1], lo[k, 2]
        volume = ex * ey * ez
        # centre of the region relative to the box, as vigra's RegionCenter - Coord<Minimum>
        rel_center = np.empty(3, np.float64)
        for d in range(3):
            centers[k, 0, d] = coord_sum[k, d] / count[k]
            centers[k, 1, d] = lo[k, d] + (hi[k, d] - lo[k, d]) / 2.0
            rel_center[d] = centers[k, 0, d] - lo[k, d]
        reached[:volume] = False
        n_comp = 0
        n_defect = 0
        defect_sum = np.zeros(3, np.float64)
        displacement = 0.0
        for start in range(volume):
            sx = start % ex
            sy = (start // ex) % ey
            sz = start // (ex * ey)
            if reached[start] or labels[z0 + sz, y0 + sy, x0 + sx] == k:
                continue
            # flood fill (6-neighbourhood; 4 in a one-slice image) of a new defect component
            reached[start] = True
            stack[0] = start
            top = 1
            size = 0
            sum_x = sum_y = sum_z = 0.0
            while top > 0:
                top -= 1
                p = stack[top]
                px, py, pz = p % ex, (p // ex) % ey, p // (ex * ey)
                size += 1
                sum_x += px
                sum_y += py
                sum_z += pz
                for step in range(6):
                    qx, qy, qz = px, py, pz
                    delta = 1 if step % 2 == 0 else -1
                    if step < 2:
                        qx += delta
                    elif step < 4:
                        qy += delta
                    else:
                        qz += delta
                    if qx < 0 or qx >= ex or qy < 0 or qy >= ey or qz < 0 or qz >= ez:
                        continue
                    q = (qz * ey + qy) * ex + qx
                    if reached[q] or labels[z0 + qz, y0 + qy, x0 + qx] == k:
                        continue
                    reached[q] = True
                    stack[top] = q
                    top += 1
            sizes[n_comp] = size
            dist2 = (sum_x / size - rel_center[0]) ** 2 + (sum_y / size - rel_center[1]) ** 2
            displacement += size * np.sqrt(dist2 + (sum_z / size - rel_center[2]) ** 2)
            defect_sum[0] += sum_x
            defect_sum[1] += sum_y
            defect_sum[2] += sum_z
            n_defect += size
            n_comp += 1
        mean, variance, skewness, kurtosis = _volume_moments(sizes[:n_comp])
        scalars[k, 0] = count[k]
        scalars[k, 1] = volume
        scalars[k, 2] = count[k] / volume
        scalars[k, 3] = mean
        scalars[k, 4] = variance
        scalars[k, 5] = skewness
        scalars[k, 6] = kurtosis
        scalars[k, 7] = n_comp
        scalars[k, 8] = displacement / n_defect if n_defect > 0 else 0.0
        for d in range(3):
            centers[k, 2, d] = lo[k, d] + (defect_sum[d] / n_defect if n_defect > 0 else 0.0)
    return scalars, centers


def _features(labels: np.ndarray, ndim: int) -> dict[str, np.ndarray]:
    """Both public functions: the label image as (z, y, x) uint32, results cut to `ndim` vector components."""
    labels = np.asarray(labels)
    if labels.ndim != ndim:
        raise ValueError(f"expected a {ndim}-D label image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"label image must be of an integer type, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("label image has negative labels")
    volume = np.ascontiguousarray(labels.reshape((1,) * (3 - ndim) + labels.shape), dtype=np.uint32)
    n = int(volume.max(initial=0)) + 1
    scalars, centers = _hull_features(volume, n)
    result = {name: scalars[:, i : i + 1].copy() for i, name in enumerate(SCALAR_FEATURES)}
    result.update({name: centers[:, i, :ndim].copy() for i, name in enumerate(VECTOR_FEATURES)})
    return result


def convex_hull_features_2d(labels: np.ndarray) -> dict[str, np.ndarray]:
    """vigra's extract2DConvexHullFeatures(labels, ignoreLabel=0) for a 2-D label image given as a (y, x)
    numpy array (x fastest, as vigra scans): name -> float64 array (max_label + 1, k), row = label value
    (row 0, the ignored label, and labels that do not occur are zeros), vectors in (x, y) order."""
    return _features(labels, 2)


def convex_hull_features_3d(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The same as `convex_hull_features_2d` for a 3-D (z, y, x) label image, vectors in (x, y, z) order."""
    return _features(labels, 3)
