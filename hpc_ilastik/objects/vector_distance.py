"""vigra's `boundaryVectorDistance(labels, OuterBoundary, array_border_is_active=false)` for 2-D label
images (`include/vigra/vector_distance.hxx`): per pixel the integer vector to the nearest pixel of another
label, by the parabola-stack sweep along x, then y. The image border is a far-away point, never a
boundary."""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _parabola_line(vec, lab, d, dmax, sp, sa, sl, sc, sr):
    """One line of vigra's `boundaryVectorDistParabola` along axis d (0 = x, 1 = y), in place on vec (n, 2)."""
    n = lab.shape[0]
    w = float(n)
    border_apex = float(dmax) * dmax * (d + 1)
    top = 0
    sp[0, 0] = dmax
    sp[0, 1] = dmax
    sa[0], sl[0], sc[0], sr[0] = border_apex, 0.0, -1.0, w
    cur_label = lab[0]
    begin = 0.0
    for i in range(n + 1):
        current = float(i)
        if i == n:
            px, py = dmax, dmax
        elif cur_label == lab[i]:
            px, py = vec[i, 0], vec[i, 1]
        else:
            px, py = 0, 0
        apex = float(px) * px + (float(py) * py if d == 1 else 0.0)
        while True:
            s = top
            diff = current - sc[s]
            inter = current + (apex - sa[s] - diff * diff) / (2.0 * diff)
            if inter < sl[s]:
                top -= 1
                if top >= 0:
                    continue
                inter = begin
            elif inter < sr[s]:
                sr[s] = inter
            if inter < w:
                top += 1
                sp[top, 0], sp[top, 1] = px, py
                sa[top], sl[top], sc[top], sr[top] = apex, inter, current, w
            if i < n and cur_label == lab[i]:
                break
            it = 0
            c = begin
            while c < current:
                while c >= sr[it]:
                    it += 1
                ci = int(c)
                vec[ci, 0], vec[ci, 1] = sp[it, 0], sp[it, 1]
                vec[ci, d] = int(sc[it] - c)
                c += 1.0
            if i == n:
                break
            begin = current
            cur_label = lab[i]
            px, py = vec[i, 0], vec[i, 1]
            apex = float(px) * px + (float(py) * py if d == 1 else 0.0)
            top = 0
            sp[0, 0], sp[0, 1] = 0, 0
            sa[0], sl[0], sc[0], sr[0] = 0.0, begin - 1.0, begin - 1.0, w


@njit(cache=True, nogil=True)
def boundary_vectors(labels: np.ndarray) -> np.ndarray:
    """(H, W, 2) int64 vectors (x, y) from each pixel to the nearest pixel of another label."""
    h, w = labels.shape
    dmax = 2 * (h + w)
    vec = np.full((h, w, 2), dmax, np.int64)
    m = max(h, w) + 2
    sp = np.empty((m, 2), np.int64)
    sa, sl, sc, sr = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    for y in range(h):
        _parabola_line(vec[y], labels[y], 0, dmax, sp, sa, sl, sc, sr)
    for x in range(w):
        _parabola_line(vec[:, x], labels[:, x], 1, dmax, sp, sa, sl, sc, sr)
    return vec
