"""vigra's 2-D skeleton object features (ilastik's "2D Skeleton Features"), numpy + numba.

Re-implements `vigra.analysis.extractSkeletonFeatures(labels)` (pruning threshold 0.2), i.e.
`skeletonizeImageImpl()` of vigra's `include/vigra/skeleton.hxx` with
`SkeletonOptions().pruneSalienceRelative(0.2)` (preserve_topology), step by step and in vigra's order
of evaluation, because scan order and tie-breaking decide which pixels form the skeleton:

1. `boundaryVectorDistance` (`objects.vector_distance`): per pixel the vector to the nearest pixel of
   another label; the image border is never a boundary.
2. The raw skeleton from the 4-connected edges in `GridGraph` edge order, the end-point repair for
   pixels at squared distance 4, then `detail::skeletonThinning` with the "preserve end points"
   simple-point table, driven by a `std::priority_queue` (libstdc++'s heap) on squared distance plus a
   FIFO offset.
3. Per label (ascending): edge weights 1 / sqrt 2 between 8-adjacent skeleton pixels of the label,
   0.5 * DBL_MAX to anything else, 0 between two non-skeleton pixels (vigra's zero-initialised edge
   map); `ShortestPathDijkstra` (`include/vigra/graph_algorithms.hxx`, with its changeable heap from
   `include/vigra/priority_queue.hxx`) restricted to the skeleton's bounding box: anchor (last skeleton
   pixel in scan order) -> farthest node -> farthest node gives the centre line (the diameter path),
   its arc-length midpoint (`Polygon::arcLengthQuantile`) is the skeleton centre, whose shortest-path
   tree is the skeleton tree.
4. Lengths and saliences propagated leaf -> centre -> leaf, loops closed by a Dijkstra re-run and
   tested for a hole with `inspectPolygon` (`include/vigra/polygon.hxx`), branches that end inside the
   region deleted, then branches counted with salience >= 0.2 * salience of the centre.

Features per label: "Diameter" (length of the centre line), "Euclidean Diameter" (distance of its
ends), "Total Length", "Average Length", "Branch Count", "Hole Count", "Skeleton Center", "Terminal 1"
(far end of the centre line) and "Terminal 2" (its other end); points are (x, y). Label 0 and labels
that do not occur get zeros, as in vigra.

Exactness (tests/test_skeleton.py): all 387 objects in the 24 frames of the eight 2-D object
classification fixtures (ilastik 1.2.2) are bit-equal, after the cast to float32 in which ilastik
stores them, for the seven features those projects cache; this includes 6 objects with holes and
loop searches that only reach their target over "infinite" edges. No fixture caches "Terminal 1/2";
their distance is the cached "Euclidean Diameter" (checked), their order follows the source.
Limits: labels must be below 2**24 (vigra's float32 skeleton image would merge larger ones); the
thinning queue breaks exact cost ties as libstdc++'s heap does (vigra's Linux builds), which only
matters if two pushes ever get the same cost plus FIFO offset.
"""

import numpy as np
from numba import njit

from hpc_ilastik.objects.vector_distance import boundary_vectors

SKELETON_FEATURES: tuple[str, ...] = ("Diameter", "Euclidean Diameter", "Total Length", "Average Length",
                                      "Branch Count", "Hole Count", "Skeleton Center", "Terminal 1", "Terminal 2")
_WIDTHS = (1, 1, 1, 1, 1, 1, 2, 2, 2)

# 8-neighbourhood in vigra's GridGraph order (ascending strides), as (dx, dy); the first four are the
# "back" neighbours, neighbour j and 7 - j are opposite.
_DX = np.array([-1, 0, 1, -1, 1, -1, 0, 1], np.int64)
_DY = np.array([-1, -1, -1, 0, 0, 1, 1, 1], np.int64)
# weight codes of an edge: 0 (never set), 1, sqrt(2), "infinite" = 0.5 * DBL_MAX
_WEIGHTS = np.array([0.0, 1.0, np.sqrt(2.0), 0.5 * np.finfo(np.float64).max])
_INF_CODE = 3
_STEP = np.array([0.0, 1.0, np.sqrt(2.0)])  # norm of an 8-neighbour step by its squared length
# configurations (bit 7 = first neighbour ... bit 0 = last) whose centre pixel may be deleted
# without changing the topology or removing an end point (vigra's isSimplePreserveEndPoints)
_SIMPLE = np.zeros(256, np.bool_)
_SIMPLE[[7, 10, 11, 14, 15, 18, 19, 22, 23, 41, 42, 43, 46, 47, 72, 73, 80, 84, 104, 105, 112, 116,
         146, 147, 148, 150, 151, 200, 201, 208, 212, 224, 232, 233, 240, 244]] = True


@njit(cache=True, nogil=True)
def _raw_skeleton(labels, vec, sqd):
    """Skeleton candidates (float32 label image, as vigra's `dest`) from 4-adjacent pixel pairs."""
    h, w = labels.shape
    dest = np.zeros((h, w), np.float32)
    ends = np.empty((4 * np.count_nonzero(sqd == 4), 2), np.int64)  # <= one entry per 4-edge
    n_ends = 0
    for y in range(h):
        for x in range(w):
            for j in range(2):  # back edges of the 4-neighbourhood: (0, -1), then (-1, 0)
                x2, y2 = (x, y - 1) if j == 0 else (x - 1, y)
                if x2 < 0 or y2 < 0:
                    continue
                l1, l2 = labels[y, x], labels[y2, x2]
                v1x, v1y, v2x, v2y = vec[y, x, 0], vec[y, x, 1], vec[y2, x2, 0], vec[y2, x2, 1]
                if l1 == l2:
                    if l1 == 0:
                        continue
                    dpx, dpy = x2 - x, y2 - y
                    dvx, dvy = v2x - v1x + dpx, v2y - v1y + dpy
                    if max(abs(dvx), abs(dvy)) <= 1:
                        continue
                    d1 = dvx * dpx + dvy * dpy
                    d2 = dvx * (v1x + v2x) + dvy * (v1y + v2y)
                    sx, sy = (x, y) if d1 * d2 <= 0 else (x2, y2)
                    dest[sy, sx] = l1
                    if sqd[sy, sx] == 4:
                        ends[n_ends, 0], ends[n_ends, 1] = sx, sy
                        n_ends += 1
                else:
                    if l1 > 0 and max(abs(v1x + x - x2), abs(v1y + y - y2)) > 1:
                        dest[y, x] = l1
                    if l2 > 0 and max(abs(v2x + x2 - x), abs(v2y + y2 - y)) > 1:
                        dest[y2, x2] = l2
    # a skeleton line stopping at distance 2 from the background gets a point towards it
    for k in range(n_ends):
        x, y = ends[k, 0], ends[k, 1]
        label = dest[y, x]
        count = 0
        for j in range(8):
            x2, y2 = x + _DX[j], y + _DY[j]
            if 0 <= x2 < w and 0 <= y2 < h and dest[y2, x2] == label and sqd[y2, x2] < 4:
                count += 1
        if count == 0:
            dest[y + vec[y, x, 1] // 2, x + vec[y, x, 0] // 2] = label
    return dest


@njit(cache=True, nogil=True)
def _configuration(dest, x, y):
    """Bit pattern of the 8 neighbours with the label of (x, y), first neighbour in the highest bit."""
    label = dest[y, x]
    v = 0
    for j in range(8):
        v = (v << 1) | (1 if dest[y + _DY[j], x + _DX[j]] == label else 0)
    return v


@njit(cache=True, nogil=True)
def _std_sift_up(hc, hn, hole, cost, node):
    """libstdc++ `__push_heap`: move (cost, node) up from hole in a min-heap by cost (std::greater)."""
    while hole > 0:
        parent = (hole - 1) // 2
        if not hc[parent] > cost:
            break
        hc[hole], hn[hole] = hc[parent], hn[parent]
        hole = parent
    hc[hole], hn[hole] = cost, node


@njit(cache=True, nogil=True)
def _std_heap_pop(hc, hn, n):
    """libstdc++ `pop_heap` + `pop_back` (the top must have been read before); returns the new size."""
    length = n - 1
    if length < 1:
        return length
    hole = 0
    second = 0
    while second < (length - 1) // 2:
        second = 2 * (second + 1)
        if hc[second] > hc[second - 1]:
            second -= 1
        hc[hole], hn[hole] = hc[second], hn[second]
        hole = second
    if (length & 1) == 0 and second == (length - 2) // 2:
        second = 2 * (second + 1)
        hc[hole], hn[hole] = hc[second - 1], hn[second - 1]
        hole = second - 1
    _std_sift_up(hc, hn, hole, hc[length], hn[length])
    return length


@njit(cache=True, nogil=True)
def _thin(dest, sqd):
    """vigra's `detail::skeletonThinning` (preserve end points) in place: delete simple interior points by squared distance."""
    h, w = dest.shape
    cap = 9 * np.count_nonzero(dest) + 1  # every point is pushed once, and again by each deleted neighbour
    hc = np.empty(cap)
    hn = np.empty(cap, np.int64)
    n = 0
    eps = 0.5 / (h * w)
    offset = 0.0
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            if dest[y, x] > 0 and _SIMPLE[_configuration(dest, x, y)]:
                _std_sift_up(hc, hn, n, sqd[y, x] + offset, y * w + x)
                n += 1
                offset += eps
    while n > 0:
        p = hn[0]
        n = _std_heap_pop(hc, hn, n)
        y, x = p // w, p % w
        if dest[y, x] == 0 or not _SIMPLE[_configuration(dest, x, y)]:
            continue
        dest[y, x] = 0
        for j in range(8):
            x2, y2 = x + _DX[j], y + _DY[j]
            if 0 < x2 < w - 1 and 0 < y2 < h - 1 and dest[y2, x2] > 0 and _SIMPLE[_configuration(dest, x2, y2)]:
                _std_sift_up(hc, hn, n, sqd[y2, x2] + offset, y2 * w + x2)
                n += 1
                offset += eps


@njit(cache=True, nogil=True)
def _edge(x, y, j):
    """(x, y, k) under which the edge from (x, y) to its neighbour j is stored (k = back-neighbour index)."""
    if j < 4:
        return x, y, j
    return x + _DX[j], y + _DY[j], 7 - j


@njit(cache=True, nogil=True)
def _edge_codes(dest):
    """Weight codes of all 8-neighbour edges, as vigra's skeleton graph initialises its edge map."""
    h, w = dest.shape
    codes = np.zeros((h, w, 4), np.int8)
    for y in range(h):
        for x in range(w):
            label = dest[y, x]
            if label <= 0:
                continue
            for j in range(8):
                x2, y2 = x + _DX[j], y + _DY[j]
                if 0 <= x2 < w and 0 <= y2 < h:
                    ex, ey, k = _edge(x, y, j)
                    codes[ey, ex, k] = (1 if _DX[j] == 0 or _DY[j] == 0 else 2) if dest[y2, x2] == label else _INF_CODE
    return codes


@njit(cache=True, nogil=True)
def _cpq_swap(heap, pos, i, j):
    heap[i], heap[j] = heap[j], heap[i]
    pos[heap[i]] = i
    pos[heap[j]] = j


@njit(cache=True, nogil=True)
def _cpq_up(heap, pos, prio, k):
    while k > 1 and prio[heap[k // 2]] > prio[heap[k]]:
        _cpq_swap(heap, pos, k, k // 2)
        k //= 2


@njit(cache=True, nogil=True)
def _cpq_down(heap, pos, prio, k, size):
    while 2 * k <= size:
        j = 2 * k
        if j < size and prio[heap[j]] > prio[heap[j + 1]]:
            j += 1
        if prio[heap[k]] <= prio[heap[j]]:
            break
        _cpq_swap(heap, pos, k, j)
        k = j


@njit(cache=True, nogil=True)
def _cpq_push(heap, pos, prio, size, i, p):
    """vigra's `ChangeablePriorityQueue::push`: insert i, or lower its priority (Dijkstra never raises one); returns the new size."""
    if pos[i] == -1:
        size += 1
        pos[i] = size
        heap[size] = i
    prio[i] = p
    _cpq_up(heap, pos, prio, pos[i])
    return size


@njit(cache=True, nogil=True)
def _cpq_pop(heap, pos, prio, size):
    """vigra's `ChangeablePriorityQueue::pop`; returns the new size."""
    top = heap[1]
    _cpq_swap(heap, pos, 1, size)
    size -= 1
    _cpq_down(heap, pos, prio, 1, size)
    pos[top] = -1
    return size


@njit(cache=True, nogil=True)
def _dijkstra(codes, box, source, target, max_dist, state, n_prev):
    """`ShortestPathDijkstra::run/reRun` inside the bounding box (x0, y0, bw, bh); returns the discovery count.

    state = (pred, dist, heap, pos, prio, order); nodes are box-local indices, pred -1 = INVALID.
    """
    pred, dist, heap, pos, prio, order = state
    x0, y0, bw, bh = box
    for k in range(n_prev):
        pred[order[k]] = -1
    dist[source] = 0.0
    pred[source] = source
    size = _cpq_push(heap, pos, prio, 0, source, 0.0)
    n = 0
    while size > 0:
        top = heap[1]
        if dist[top] > max_dist:
            break
        size = _cpq_pop(heap, pos, prio, size)
        order[n] = top
        n += 1
        if top == target:
            break
        tx, ty = top % bw, top // bw
        for j in range(8):
            nx, ny = tx + _DX[j], ty + _DY[j]
            if nx < 0 or ny < 0 or nx >= bw or ny >= bh:
                continue  # outside the ROI: vigra marks these "don't touch"
            other = ny * bw + nx
            ex, ey, k = _edge(x0 + tx, y0 + ty, j)
            d = dist[top] + _WEIGHTS[codes[ey, ex, k]]
            if pos[other] != -1:
                if d < dist[other]:
                    size = _cpq_push(heap, pos, prio, size, other, d)
                    dist[other] = d
                    pred[other] = top
            elif pred[other] == -1 and d <= max_dist:
                size = _cpq_push(heap, pos, prio, size, other, d)
                dist[other] = d
                pred[other] = top
    while size > 0:
        pred[heap[1]] = -1
        size = _cpq_pop(heap, pos, prio, size)
    return n


@njit(cache=True, nogil=True)
def _encloses_other_label(labels, label, poly, m, box):
    """not `inspectPolygon(poly, labels[p] == label)`: the closed polygon poly[:m] (box-local nodes, first == last)
    covers a pixel of another label.

    Scan intervals as vigra's `detail::createScanIntervals` builds them (contour pixels included, knots on a
    scanline kept when convex, the next start dropped by the convexity rule), here for steps between
    8-neighbours: a non-horizontal step from k to k + 1 contributes point k unless it was dropped.
    """
    x0, y0, bw, _ = box
    w = labels.shape[1]
    px = x0 + poly[:m] % bw
    py = y0 + poly[:m] // bw
    keys = np.empty(2 * m, np.int64)  # y * w + x, sorted below into (y, x) order
    nk = 0
    drop = False
    for k in range(m - 1):
        x1, y1, x2, y2 = px[k], py[k], px[k + 1], py[k + 1]
        if y1 == y2:
            continue
        if not drop:
            keys[nk] = y1 * w + x1
            nk += 1
        dy = y2 - y1
        j = (k + 2) % m
        convex = (x2 - x1) * (py[j] - y1) - dy * (px[j] - x1) <= 0
        if convex:
            keys[nk] = y2 * w + x2
            nk += 1
        drop = False
        while j != k + 1:
            bend = dy * (py[j] - y2)
            if bend != 0:
                drop = (convex and bend > 0) or (not convex and bend < 0)
                break
            j = (j + 1) % m
    keys = np.sort(keys[1 if drop else 0:nk])
    for k in range(0, keys.shape[0] - 1, 2):
        y = keys[k] // w
        for x in range(keys[k] % w, keys[k + 1] % w + 1):
            if labels[y, x] != label:
                return True
    return False


@njit(cache=True, nogil=True)
def _region_features(labels, sqd, codes, label, box, anchor, max_weight, out):
    """Skeleton tree, pruning and features of one label whose skeleton lies in box = (x0, y0, bw, bh)."""
    x0, y0, bw, bh = box
    h, w = labels.shape
    nb = bw * bh
    state = (np.full(nb, -1, np.int64), np.zeros(nb), np.full(nb + 1, -1, np.int64),
             np.full(nb, -1, np.int64), np.zeros(nb), np.empty(nb, np.int64))
    pred, order = state[0], state[5]
    # diameter: anchor -> farthest node a -> farthest node b; the centre line runs from b back to a
    n = _dijkstra(codes, box, anchor, -1, max_weight, state, 0)
    n = _dijkstra(codes, box, order[n - 1], -1, max_weight, state, n)
    line = np.empty(n, np.int64)
    line[0] = order[n - 1]
    nl = 1
    while pred[line[nl - 1]] != line[nl - 1]:
        line[nl] = pred[line[nl - 1]]
        nl += 1
    arc = np.zeros(nl)
    for i in range(1, nl):
        dx = line[i] % bw - line[i - 1] % bw
        dy = line[i] // bw - line[i - 1] // bw
        arc[i] = arc[i - 1] + np.sqrt(float(dx * dx + dy * dy))
    quantile = 0.0  # Polygon::arcLengthQuantile(0.5): before the first knot at >= half the length
    if nl > 1:
        half = 0.5 * arc[nl - 1]
        k = np.searchsorted(arc, half) - 1
        quantile = k + (half - arc[k]) / (arc[k + 1] - arc[k])
    center = line[int(quantile + 0.5)]
    # skeleton tree = shortest-path tree from the centre, in discovery order
    n = _dijkstra(codes, box, center, -1, max_weight, state, n)
    raw = order[:n].copy()
    n_last = n
    parent = np.full(nb, -1, np.int64)
    child = np.full(nb, -1, np.int64)  # principal child: root of the longest subtree
    length = np.zeros(nb)
    salience = np.ones(nb)
    area = np.zeros(nb, np.int64)  # twice the partial area swept from the centre
    loop = np.zeros(nb, np.bool_)
    # periphery -> centre: tree, subtree depth, salience; drop non-tree edges unless they may close a loop
    for k in range(n - 1, -1, -1):
        p1 = raw[k]
        p2 = pred[p1]
        parent[p1] = p2
        x, y = p1 % bw, p1 // bw
        for j in range(4):
            nx, ny = x + _DX[j], y + _DY[j]
            if nx < 0 or ny < 0 or nx >= bw:
                continue
            ex, ey, e = _edge(x0 + x, y0 + y, j)
            p = ny * bw + nx
            if codes[ey, ex, e] == _INF_CODE or p == p2 or pred[p] == p1 or child[p1] == -1 or child[p] == -1:
                continue
            codes[ey, ex, e] = _INF_CODE
        dx, dy = x - p2 % bw, y - p2 // bw
        step = _STEP[dx * dx + dy * dy]
        if length[p2] < length[p1] + step:
            length[p2] = length[p1] + step
            child[p2] = p1
        if length[p1] >= 4.0:
            salience[p1] = max(salience[p1], (length[p1] + 0.5) / np.sqrt(float(sqd[y0 + y, x0 + x])))
            if salience[p2] < salience[p1]:
                salience[p2] = salience[p1]
    # centre -> periphery: segment length and salience along principal children, partial areas
    for k in range(n):
        p1 = raw[k]
        p2 = parent[p1]
        x1, y1, x2, y2 = x0 + p1 % bw, y0 + p1 // bw, x0 + p2 % bw, y0 + p2 // bw
        if p1 == child[p2]:
            length[p1] = length[p2]
            salience[p1] = salience[p2]
        else:
            length[p1] += _STEP[(x2 - x1) ** 2 + (y2 - y1) ** 2]
        area[p1] = area[p2] + (x1 * y2 - y1 * x2)
    loop[center] = True
    # periphery -> centre: close loops around holes, delete branches ending inside the region
    holes = 0
    total = 0.0
    poly = np.empty(nb + 2, np.int64)
    for k in range(n - 1, -1, -1):
        p1 = raw[k]
        x1, y1 = x0 + p1 % bw, y0 + p1 // bw
        if child[p1] == -1:
            for j in range(8):
                x2, y2 = x1 + _DX[j], y1 + _DY[j]
                if x2 < x0 or y2 < y0 or x2 >= x0 + bw or y2 >= y0 + bh:
                    continue  # not this label's skeleton: an infinite edge
                p2 = (y2 - y0) * bw + (x2 - x0)
                ex, ey, e = _edge(x1, y1, j)
                if parent[p1] == p2 or codes[ey, ex, e] == _INF_CODE:
                    continue
                if abs(area[p1] - (x1 * y2 - y1 * x2) - area[p2]) <= 3:
                    continue  # too small to enclose a hole
                codes[ey, ex, e] = _INF_CODE
                n_last = _dijkstra(codes, box, p1, p2, np.finfo(np.float64).max, state, n_last)
                poly[0], poly[1] = p1, p2  # p1, p2, then the new path back to p1
                m = 2
                while poly[m - 1] != p1:
                    poly[m] = pred[poly[m - 1]]
                    m += 1
                if _encloses_other_label(labels, label, poly, m, box):
                    holes += 1
                    total += length[p1] + length[p2]
                    top = max(salience[p1], salience[p2])
                    for q in poly[1:m]:
                        loop[q] = True
                        salience[q] = max(salience[q], top)
            if not loop[p1] and sqd[y1, x1] >= 4:
                q = p1
                while True:
                    salience[q] = 0.0
                    qx, qy = x0 + q % bw, y0 + q // bw
                    for j in range(8):
                        if 0 <= qx + _DX[j] < w and 0 <= qy + _DY[j] < h:
                            ex, ey, e = _edge(qx, qy, j)
                            codes[ey, ex, e] = _INF_CODE
                    if child[parent[q]] != q:
                        break
                    q = parent[q]
        if loop[p1]:
            loop[parent[p1]] = True
    # count the branches that survive pruning
    threshold = 0.2 * salience[center]
    branches = 0
    average = 0.0
    for k in range(n):
        p = raw[k]
        if child[p] == -1 and salience[p] >= threshold and not loop[p]:
            branches += 1
            average += length[p]
            total += length[p]
    if branches > 0:
        average /= branches
    t1x, t1y = x0 + line[0] % bw, y0 + line[0] // bw
    t2x, t2y = x0 + line[nl - 1] % bw, y0 + line[nl - 1] // bw
    out[:] = np.array([arc[nl - 1], np.sqrt(float((t2x - t1x) ** 2 + (t2y - t1y) ** 2)), total, average, branches,
                       holes, x0 + center % bw, y0 + center // bw, t1x, t1y, t2x, t2y], np.float64)


@njit(cache=True, nogil=True)
def _skeleton_table(labels, n_labels):
    """(n_labels, 13) features of a (y, x) uint32 label image, columns in SKELETON_FEATURES order, then 1 for the
    labels that have a skeleton."""
    h, w = labels.shape
    vec = boundary_vectors(labels)
    sqd = vec[:, :, 0] * vec[:, :, 0] + vec[:, :, 1] * vec[:, :, 1]
    dest = _raw_skeleton(labels, vec, sqd)
    _thin(dest, sqd)
    codes = _edge_codes(dest)
    lower = np.full((n_labels, 2), 2**62, np.int64)
    upper = np.full((n_labels, 2), -1, np.int64)
    anchor = np.zeros((n_labels, 2), np.int64)
    for y in range(h):
        for x in range(w):
            label = int(dest[y, x])
            if label > 0:
                lower[label, 0], lower[label, 1] = min(lower[label, 0], x), min(lower[label, 1], y)
                upper[label, 0], upper[label, 1] = max(upper[label, 0], x), max(upper[label, 1], y)
                anchor[label, 0], anchor[label, 1] = x, y
    # vigra's maxWeight = number of edges of the 8-neighbourhood grid graph * sqrt(2)
    max_weight = ((3 * w - 2) * (3 * h - 2) - w * h) // 2 * np.sqrt(2.0)
    table = np.zeros((n_labels, 13))
    for label in range(1, n_labels):
        if upper[label, 0] < 0:
            continue
        x0, y0 = lower[label, 0], lower[label, 1]
        bw, bh = upper[label, 0] - x0 + 1, upper[label, 1] - y0 + 1
        start = (anchor[label, 1] - y0) * bw + anchor[label, 0] - x0
        _region_features(labels, sqd, codes, label, (x0, y0, bw, bh), start, max_weight, table[label, :12])
        table[label, 12] = 1.0
    return table


def skeleton_features(labels: np.ndarray, origin: tuple[int, int] = (0, 0)) -> dict[str, np.ndarray]:
    """vigra's extractSkeletonFeatures(labels, pruning_threshold=0.2) on a 2-D label image given as a (y, x) numpy
    array (x fastest, as vigra scans): name -> float64 array of shape (max_label + 1, k), row = label value (row 0 =
    label 0, whatever vigra gives for it), 2-vectors (Skeleton Center, Terminal 1/2) in (x, y) order, shifted by
    `origin` (x, y: where `labels` lies in a larger image) except for labels without a skeleton, which keep
    vigra's zeros."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "biu":
        raise ValueError(f"expected a 2-D integer label image, got {labels.dtype} of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= 2**24):
        raise ValueError("labels must lie in [0, 2**24): vigra keeps skeleton labels as float32")
    n_labels = int(labels.max()) + 1 if labels.size else 1
    table = (_skeleton_table(np.ascontiguousarray(labels, dtype=np.uint32), n_labels) if labels.size
             else np.zeros((1, 13)))
    has_skeleton = table[:, 12] > 0
    table = table[:, :12]
    table[has_skeleton, 6:] += np.tile(np.asarray(origin, dtype=np.float64), 3)
    return dict(zip(SKELETON_FEATURES, np.split(table, np.cumsum(_WIDTHS)[:-1], axis=1)))
