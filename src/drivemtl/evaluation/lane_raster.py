"""Open polylines drawn the way matplotlib's Agg renderer draws them (no antialiasing, snapping on).

BDD100K's `to_mask` paints lane poly2d labels with matplotlib; matplotlib is not a DriveMTL
dependency, so this module reproduces its pipeline step by step in plain Python / numpy:

1. PathClipper: line segments are cut to the canvas grown by 1 px (Agg's clip_line_segment);
   a 'C' vertex and the two after it form one cubic Bezier segment and are never clipped.
2. PathSnapper (snap=True, odd stroke width): every vertex moves to the nearest pixel centre.
2b. PathSimplifier, only for paths of 128 or more vertices without curves (`Path.should_simplify`
   with rcParams 'path.simplify' on): runs of snapped vertices within 1/9 px of one line are
   merged into that line's farthest forward (and backward) points.
3. conv_curve: Bezier segments flattened by Agg's recursive subdivision (curve4_div).
4. vcgen_stroke: each sub-path becomes one closed outline, width 1 pt at 100 dpi (100 / 72 px),
   butt caps, miter joins with matplotlib's miter limit (the width in pixels) falling back to a
   bevel, inner miter joins.
5. rasterizer_scanline_aa with a double-precision clipper: outline edges clipped to the canvas,
   rounded to 1/256 px, accumulated as cells (cover, area), swept with the non-zero rule; with
   antialiasing off a pixel is painted when its coverage byte is non-zero.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from drivemtl.evaluation.base import EvaluationInputError

STROKE_WIDTH = 100.0 / 72.0  # 1 pt at matplotlib's default 100 dpi, in pixels
MITER_LIMIT = STROKE_WIDTH  # matplotlib passes the line width in pixels as Agg's miter limit
SIMPLIFY_MIN_VERTICES = 128  # matplotlib simplifies line-only paths from this many vertices
SIMPLIFY_THRESHOLD = 0.111111111111  # rcParams['path.simplify_threshold'] (its default), px
_BEZIER_TOLERANCE_SQ = 0.25  # Agg curve4_div: (0.5 / approximation scale 1.0) ** 2
_BEZIER_RECURSION_LIMIT = 32
_COLLINEARITY_EPS = 1e-30

_MOVE, _LINE, _CURVE = "M", "L", "C"


def poly_paths(
    vertices: list[tuple[float, float]] | np.ndarray, types: str, size: tuple[int, int]
) -> list[np.ndarray]:
    """Pixel-space polylines ([N, 2] x, y) that Agg strokes for one poly2d drawn open.

    matplotlib's pipeline: line segments are clipped to the canvas grown by one pixel (curve
    vertices pass unclipped), every vertex is snapped to a pixel centre, a path of 128 or more
    vertices without curves is simplified, then each 'C' run is flattened as a cubic Bezier (a
    'C' takes the next two vertices, whatever their type).
    """
    points = np.asarray(vertices, np.float64).reshape(-1, 2)
    if len(points) < 2:
        return []
    if len(types) != len(points):
        raise EvaluationInputError(f"poly2d has {len(points)} vertices but types {types!r}")
    height, width = size
    box = (-1.0, -1.0, width + 1.0, height + 1.0)
    commands = [(code, _snap(xy)) for code, xy in _clipped_commands(points, types, box)]
    if should_simplify(types):
        commands = simplify_commands(commands)
    return _flatten(commands)


def should_simplify(types: str) -> bool:
    """matplotlib's Path.should_simplify for a poly2d: >= 128 vertices, only MOVETO / LINETO.

    The first vertex is always a MOVETO (whatever its type), so only the later types count.
    """
    return len(types) >= SIMPLIFY_MIN_VERTICES and _CURVE not in types[1:]


def _clipped_commands(
    points: np.ndarray, types: str, box: tuple[float, float, float, float]
) -> list[tuple[str, np.ndarray]]:
    """matplotlib's PathClipper: (code, xy) commands with line segments cut to `box`.

    A 'C' vertex and the two after it form one cubic segment whatever their own types
    (matplotlib's NaN remover re-codes them), and curve vertices are never clipped; a curve
    cut short by the end of the poly2d takes (0, 0) for its missing vertices, as matplotlib's
    path iterator returns there.
    """
    out: list[tuple[str, np.ndarray]] = []
    last = points[0]
    need_move = True  # no command emitted since the (implicit) move to the first vertex
    k = 1
    while k < len(points):
        if types[k] == "C":
            if need_move:
                out.append((_MOVE, last))
                need_move = False
            group = list(points[k : k + 3])
            group += [np.zeros(2)] * (3 - len(group))  # read past the end: matplotlib gives (0, 0)
            out.extend((_CURVE, xy) for xy in group)
            last = group[-1]
            k += 3
            continue
        clipped = clip_line_segment(last, points[k], box)
        if clipped is not None:
            a, b, first_moved = clipped
            if first_moved or need_move:
                out.append((_MOVE, a))
            out.append((_LINE, b))
            need_move = False
        last = points[k]
        k += 1
    return out


def clip_line_segment(
    a: np.ndarray, b: np.ndarray, box: tuple[float, float, float, float]
) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """Agg's clip_line_segment: the part of a-b in `box` and whether `a` moved (None: none)."""
    fa, fb = _box_flags(a, box), _box_flags(b, box)
    if not fa and not fb:
        return a, b, False
    for mask in (0b0101, 0b1010):  # both ends beyond the same vertical / horizontal side
        if fa & mask and (fa & mask) == (fb & mask):
            return None
    start, end = a, b
    if fa:
        start = _move_into(a, b, a, box, fa)
        if start is None or (start == end).all():
            return None
    if fb:
        end = _move_into(a, b, b, box, fb)
        if end is None or (start == end).all():
            return None
    return start, end, bool(fa)


def _box_flags(p: np.ndarray, box: tuple[float, float, float, float]) -> int:
    """Agg's clipping_flags: 1 right of, 2 below, 4 left of, 8 above the box."""
    x0, y0, x1, y1 = box
    return (p[0] > x1) | ((p[1] > y1) << 1) | ((p[0] < x0) << 2) | ((p[1] < y0) << 3)


def _move_into(
    a: np.ndarray, b: np.ndarray, p: np.ndarray, box: tuple[float, float, float, float], flags: int
) -> np.ndarray | None:
    """Agg's clip_move_point: slide end `p` of a-b onto the box's side(s); None if parallel."""
    x0, y0, x1, y1 = box
    x, y = float(p[0]), float(p[1])
    if flags & 0b0101:
        if a[0] == b[0]:
            return None
        bound = x0 if flags & 0b0100 else x1
        x, y = bound, (bound - a[0]) * (b[1] - a[1]) / (b[0] - a[0]) + a[1]
    if y > y1 or y < y0:
        if a[1] == b[1]:
            return None
        bound = y0 if y < y0 else y1
        x, y = (bound - a[1]) * (b[0] - a[0]) / (b[1] - a[1]) + a[0], bound
    return np.array([x, y])


def simplify_commands(
    commands: list[tuple[str, np.ndarray]], threshold: float = SIMPLIFY_THRESHOLD
) -> list[tuple[str, np.ndarray]]:
    """matplotlib's PathSimplifier on snapped MOVETO / LINETO commands (pixels).

    Each run of vertices whose offset from the run's first vector stays under `threshold` px
    becomes one line to its farthest forward point (and its farthest backward one, if the run
    doubles back), then a line back to the run's last vertex when that was not an extreme.
    """
    if not commands:
        return []
    state = _Simplifier(threshold * threshold)
    for code, xy in commands:
        state.feed(code, (float(xy[0]), float(xy[1])))
    return state.finish()


class _Simplifier:
    """The running state of matplotlib's path simplification (one vector being extended)."""

    def __init__(self, threshold_sq: float) -> None:
        self.threshold_sq = threshold_sq
        self.out: list[tuple[str, np.ndarray]] = []
        self.fresh = True  # nothing consumed yet (taken as a MOVETO, as matplotlib does)
        self.after_move = False  # the last command was a MOVETO
        self.need_move = True  # the next line starts a new sub-path
        self.last = (0.0, 0.0)  # the previous vertex
        self.start = (0.0, 0.0)  # where the vector being extended starts
        self.vector, self.norm_sq = (0.0, 0.0), 0.0  # 0: no vector yet
        self.forward, self.forward_sq, self.forward_last = (0.0, 0.0), 0.0, False
        self.backward, self.backward_sq, self.backward_last = (0.0, 0.0), 0.0, False

    def emit(self, code: str, point: tuple[float, float]) -> None:
        """Append one output command."""
        self.out.append((code, np.array(point)))

    def feed(self, code: str, point: tuple[float, float]) -> None:
        """Consume one input command."""
        if code == _MOVE or self.fresh:
            self._move(point)
            return
        self.after_move = False
        if self.norm_sq == 0.0:
            if self.need_move:
                self.emit(_MOVE, self.last)
                self.need_move = False
            self._new_vector(self.last, point)
            return
        if not self._merge(point):
            self._flush(point)

    def _move(self, point: tuple[float, float]) -> None:
        """A MOVETO: close the pending vector (once) and start over at `point`."""
        if self.norm_sq != 0.0 and not self.after_move:
            self._flush(point)
        self.fresh, self.after_move = False, True
        self.last = point
        self.norm_sq = 0.0
        self.backward_sq = 0.0
        self.need_move = True

    def _new_vector(self, start: tuple[float, float], point: tuple[float, float]) -> None:
        """Start extending the vector from `start` through `point` (the previous vertex)."""
        dx, dy = point[0] - self.last[0], point[1] - self.last[1]
        self.vector, self.norm_sq = (dx, dy), dx * dx + dy * dy
        self.forward_sq, self.forward_last = self.norm_sq, True
        self.backward_sq, self.backward_last = 0.0, False
        self.start = start
        self.forward = self.last = point

    def _merge(self, point: tuple[float, float]) -> bool:
        """Fold `point` into the current vector if it lies within the threshold of its line."""
        (ox, oy), (sx, sy) = self.vector, self.start
        tx, ty = point[0] - sx, point[1] - sy
        dot = ox * tx + oy * ty
        px, py = dot * ox / self.norm_sq, dot * oy / self.norm_sq
        qx, qy = tx - px, ty - py
        if qx * qx + qy * qy >= self.threshold_sq:
            return False
        along_sq = px * px + py * py
        self.forward_last = self.backward_last = False
        if dot > 0.0:
            if along_sq > self.forward_sq:
                self.forward, self.forward_sq, self.forward_last = point, along_sq, True
        elif along_sq > self.backward_sq:
            self.backward, self.backward_sq, self.backward_last = point, along_sq, True
        self.last = point
        return True

    def _flush(self, point: tuple[float, float]) -> None:
        """Draw the merged vector and start a new one from the previous vertex to `point`."""
        ends = [self.forward]
        if self.backward_sq > 0.0:
            ends = [self.backward, self.forward] if self.forward_last else [*ends, self.backward]
        for end in ends:
            self.emit(_LINE, end)
        if not self.forward_last and not self.backward_last:
            self.emit(_LINE, self.last)  # the run ended between its extremes: go back there
        last_out = self.out[-1][1]
        self._new_vector((float(last_out[0]), float(last_out[1])), point)

    def finish(self) -> list[tuple[str, np.ndarray]]:
        """The output once the input ends: the pending vector's ends, then the last vertex."""
        code = _MOVE if self.fresh or self.after_move else _LINE
        if self.norm_sq != 0.0:
            self.emit(code, self.forward)
            if self.backward_sq > 0.0:
                self.emit(code, self.backward)
        self.emit(code, self.last)
        return self.out


def _flatten(commands: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
    """Agg's conv_curve + path splitting: polylines, Bezier runs replaced by their points."""
    paths: list[list[np.ndarray]] = []
    k = 0
    while k < len(commands):
        code, xy = commands[k]
        if code == _MOVE or not paths:
            paths.append([xy])
            if code == _MOVE:
                k += 1
                continue
        current = paths[-1]
        if code == _CURVE:
            rest = [commands[min(j, len(commands) - 1)][1] for j in (k + 1, k + 2)]
            current.extend(bezier_points(current[-1], xy, *rest))
            k += 3
        else:
            current.append(xy)
            k += 1
    return [np.asarray(p) for p in paths if len(p) >= 2]


def _snap(point: np.ndarray) -> np.ndarray:
    """matplotlib's PathSnapper for an odd-width stroke: the centre of the nearest pixel."""
    return np.floor(point + 0.5) + 0.5


def bezier_points(
    p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, p4: np.ndarray
) -> list[np.ndarray]:
    """Flattened cubic Bezier (Agg's curve4_div subdivision): points after p1, ending at p4."""
    out: list[np.ndarray] = []
    _subdivide(tuple(p1), tuple(p2), tuple(p3), tuple(p4), 0, out)
    out.append(np.asarray(p4, np.float64))
    return out


def _subdivide(
    p1: tuple, p2: tuple, p3: tuple, p4: tuple, level: int, out: list[np.ndarray]
) -> None:
    """Recursive midpoint subdivision until the control polygon is flat within tolerance."""
    if level > _BEZIER_RECURSION_LIMIT:
        return
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = p1, p2, p3, p4
    x12, y12 = (x1 + x2) / 2, (y1 + y2) / 2
    x23, y23 = (x2 + x3) / 2, (y2 + y3) / 2
    x34, y34 = (x3 + x4) / 2, (y3 + y4) / 2
    x123, y123 = (x12 + x23) / 2, (y12 + y23) / 2
    x234, y234 = (x23 + x34) / 2, (y23 + y34) / 2
    x1234, y1234 = (x123 + x234) / 2, (y123 + y234) / 2
    dx, dy = x4 - x1, y4 - y1
    d2 = abs((x2 - x4) * dy - (y2 - y4) * dx)
    d3 = abs((x3 - x4) * dy - (y3 - y4) * dx)
    flat2, flat3 = d2 <= _COLLINEARITY_EPS, d3 <= _COLLINEARITY_EPS
    chord_sq = dx * dx + dy * dy
    if flat2 and flat3:
        done = _collinear_case(p1, p2, p3, p4, out)
        if done:
            return
    elif flat2 or flat3:
        d = d3 if flat2 else d2
        if d * d <= _BEZIER_TOLERANCE_SQ * chord_sq:
            out.append(np.array([x23, y23]))
            return
    elif (d2 + d3) ** 2 <= _BEZIER_TOLERANCE_SQ * chord_sq:
        out.append(np.array([x23, y23]))
        return
    _subdivide(p1, (x12, y12), (x123, y123), (x1234, y1234), level + 1, out)
    _subdivide((x1234, y1234), (x234, y234), (x34, y34), p4, level + 1, out)


def _collinear_case(p1: tuple, p2: tuple, p3: tuple, p4: tuple, out: list[np.ndarray]) -> bool:
    """All four points on a line: stop (adding a control point if it sticks out) or go on."""
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = p1, p2, p3, p4
    dx, dy = x4 - x1, y4 - y1
    k = dx * dx + dy * dy
    if k == 0:
        d2 = (x1 - x2) ** 2 + (y1 - y2) ** 2
        d3 = (x4 - x3) ** 2 + (y4 - y3) ** 2
    else:
        k = 1 / k
        d2 = k * ((x2 - x1) * dx + (y2 - y1) * dy)
        d3 = k * ((x3 - x1) * dx + (y3 - y1) * dy)
        if 0 < d2 < 1 and 0 < d3 < 1:
            return True  # both controls between the ends: the chord is exact
        d2 = _distance_sq_to_param(p2, p1, p4, d2)
        d3 = _distance_sq_to_param(p3, p1, p4, d3)
    if d2 > d3:
        if d2 < _BEZIER_TOLERANCE_SQ:
            out.append(np.array([x2, y2]))
            return True
    elif d3 < _BEZIER_TOLERANCE_SQ:
        out.append(np.array([x3, y3]))
        return True
    return False


def _distance_sq_to_param(p: tuple, a: tuple, b: tuple, t: float) -> float:
    """Squared distance of `p` to a + t (b - a) with t clamped to the end points."""
    if t <= 0:
        q = a
    elif t >= 1:
        q = b
    else:
        q = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
    return (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2


def stroke_outline(path: np.ndarray, width: float = STROKE_WIDTH) -> np.ndarray | None:
    """The closed outline Agg's stroker (vcgen_stroke) makes of an open polyline, or None.

    Butt caps, miter joins (limit 4, beyond it a truncated miter), inner miter joins (limit 1.01
    or the shorter segment); the order is Agg's: start cap, joins forward, end cap, joins back.
    """
    keep = np.ones(len(path), bool)
    keep[1:] = np.hypot(*np.diff(path, axis=0).T) > _VERTEX_EPS
    points = [tuple(map(float, p)) for p in path[keep]]
    if len(points) < 2:
        return None
    half = width / 2
    lengths = [math.dist(a, b) for a, b in itertools.pairwise(points)]
    out = _butt_cap(points[0], points[1], lengths[0], half)
    for k in range(1, len(points) - 1):
        out += _join(points[k - 1], points[k], points[k + 1], lengths[k - 1], lengths[k], half)
    out += _butt_cap(points[-1], points[-2], lengths[-1], half)
    for k in range(len(points) - 2, 0, -1):
        out += _join(points[k + 1], points[k], points[k - 1], lengths[k], lengths[k - 1], half)
    return np.asarray(out)


_VERTEX_EPS = 1e-14  # Agg's vertex_dist_epsilon: closer vertices are merged
_INNER_MITER_LIMIT = 1.01


def _butt_cap(v0: tuple, v1: tuple, length: float, half: float) -> list[tuple[float, float]]:
    """The two corners of a butt cap at v0 of the segment v0 -> v1."""
    dx = (v1[1] - v0[1]) / length * half
    dy = (v1[0] - v0[0]) / length * half
    return [(v0[0] - dx, v0[1] + dy), (v0[0] + dx, v0[1] - dy)]


def _cross(a: tuple, b: tuple, p: tuple) -> float:
    """Which side of the line a -> b the point p lies on (Agg's cross_product)."""
    return (p[0] - b[0]) * (b[1] - a[1]) - (p[1] - b[1]) * (b[0] - a[0])


def _intersection(a: tuple, b: tuple, c: tuple, d: tuple) -> tuple[float, float] | None:
    """Intersection of the lines a-b and c-d, None when (numerically) parallel."""
    num = (a[1] - c[1]) * (d[0] - c[0]) - (a[0] - c[0]) * (d[1] - c[1])
    den = (b[0] - a[0]) * (d[1] - c[1]) - (b[1] - a[1]) * (d[0] - c[0])
    if abs(den) < 1e-30:
        return None
    r = num / den
    return a[0] + r * (b[0] - a[0]), a[1] + r * (b[1] - a[1])


def _join(
    v0: tuple, v1: tuple, v2: tuple, len1: float, len2: float, half: float
) -> list[tuple[float, float]]:
    """Outline points at the inner vertex v1 on the side the stroker is walking."""
    dx1, dy1 = half * (v1[1] - v0[1]) / len1, half * (v1[0] - v0[0]) / len1
    dx2, dy2 = half * (v2[1] - v1[1]) / len2, half * (v2[0] - v1[0]) / len2
    cp = _cross(v0, v1, v2)
    if cp > _VERTEX_EPS:  # inner side of the turn
        limit = max(min(len1, len2) / half, _INNER_MITER_LIMIT)
        return _miter(v0, v1, v2, (dx1, dy1, dx2, dy2), limit, 0.0, revert=True, half=half)
    dbevel = math.hypot((dx1 + dx2) / 2, (dy1 + dy2) / 2)
    return _miter(v0, v1, v2, (dx1, dy1, dx2, dy2), MITER_LIMIT, dbevel, revert=True, half=half)


def _miter(
    v0: tuple,
    v1: tuple,
    v2: tuple,
    d: tuple[float, float, float, float],
    limit: float,
    dbevel: float,
    revert: bool,
    half: float,
) -> list[tuple[float, float]]:
    """Agg's calc_miter: the offset lines' intersection, or a bevel / truncated miter."""
    dx1, dy1, dx2, dy2 = d
    p1, p2 = (v1[0] + dx1, v1[1] - dy1), (v1[0] + dx2, v1[1] - dy2)
    reach = half * limit
    tip = _intersection((v0[0] + dx1, v0[1] - dy1), p1, p2, (v2[0] + dx2, v2[1] - dy2))
    if tip is not None:
        di = math.dist(v1, tip)
        if di <= reach:
            return [tip]
    elif (_cross(v0, v1, p1) < 0.0) == (_cross(v1, v2, p1) < 0.0):
        return [p1]  # the next segment continues straight on
    if revert:
        return [p1, p2]
    if tip is None:
        return [
            (p1[0] + dy1 * limit, p1[1] + dx1 * limit),
            (p2[0] - dy2 * limit, p2[1] - dx2 * limit),
        ]
    t = (reach - dbevel) / (di - dbevel)
    return [
        (p1[0] + (tip[0] - p1[0]) * t, p1[1] + (tip[1] - p1[1]) * t),
        (p2[0] + (tip[0] - p2[0]) * t, p2[1] + (tip[1] - p2[1]) * t),
    ]


def paint_stroke(canvas: np.ndarray, paths: list[np.ndarray], code: int) -> None:
    """Set to `code` every pixel Agg's binary rasteriser lights for the strokes of `paths`."""
    cells: list[tuple[int, int, int, int]] = []
    box = (float(canvas.shape[1]), float(canvas.shape[0]))
    for path in paths:
        outline = stroke_outline(path)
        if outline is not None:
            _polygon_cells(outline, box, cells)
    xs, ys = lit_pixels(cells, canvas.shape)
    canvas[ys, xs] = code


_SHIFT = 8  # Agg's poly_subpixel_shift: coordinates in 1/256 pixel
_SCALE = 1 << _SHIFT
_MASK = _SCALE - 1


def _polygon_cells(points: np.ndarray, box: tuple[float, float], cells: list) -> None:
    """Add the cells (x, y, cover, area) of the closed polygon through `points` (pixels).

    Edges are clipped to the canvas [0, W] x [0, H] as matplotlib's Agg rasteriser does (in
    doubles, `rasterizer_sl_clip_dbl`): parts left / right of it become edges on its border,
    parts above / below are dropped; the pieces' ends are then rounded to 1/256 pixel.
    """
    pts = [(float(x), float(y)) for x, y in points]
    for a, b in zip(pts, pts[1:] + pts[:1], strict=True):
        _clip_x(a, b, box, cells)


def _flags(x: float, y: float, box: tuple[float, float]) -> int:
    """Agg's clipping_flags: 1 right, 2 below, 4 left, 8 above the box."""
    return (x > box[0]) | ((y > box[1]) << 1) | ((x < 0) << 2) | ((y < 0) << 3)


def _clip_x(a: tuple, b: tuple, box: tuple[float, float], cells: list) -> None:
    """Agg's rasterizer_sl_clip::line_to: split an edge at the canvas' left / right border."""
    (x1, y1), (x2, y2) = a, b
    f1, f2 = _flags(x1, y1, box), _flags(x2, y2, box)
    if (f1 & 10) == (f2 & 10) and (f1 & 10):
        return  # entirely above or below the canvas
    right = box[0]
    side1 = right if f1 & 1 else 0.0 if f1 & 4 else None
    side2 = right if f2 & 1 else 0.0 if f2 & 4 else None
    borders = [x for x in (side1, side2) if x is not None and side1 != side2]
    pieces = [(x1, y1)]
    pieces += [(x, y1 + (x - x1) * (y2 - y1) / (x2 - x1)) for x in borders]
    pieces.append((x2, y2))
    clamped = [(min(max(x, 0.0), right), y) for x, y in pieces]
    for (px1, py1), (px2, py2) in itertools.pairwise(clamped):
        _clip_y(px1, py1, px2, py2, box[1], cells)


def _clip_y(x1: float, y1: float, x2: float, y2: float, height: float, cells: list) -> None:
    """Agg's line_clip_y: cut an edge to the canvas rows, then rasterise it in 1/256 px."""
    f1 = ((y1 > height) << 1) | ((y1 < 0) << 3)
    f2 = ((y2 > height) << 1) | ((y2 < 0) << 3)
    if f1 == f2 and f1:
        return
    tx1, ty1, tx2, ty2 = x1, y1, x2, y2
    for flag, target in ((8, 0.0), (2, height)):
        if f1 & flag:
            tx1, ty1 = x1 + (target - y1) * (x2 - x1) / (y2 - y1), target
        if f2 & flag:
            tx2, ty2 = x1 + (target - y1) * (x2 - x1) / (y2 - y1), target
    _line_cells(_iround(tx1), _iround(ty1), _iround(tx2), _iround(ty2), cells)


def _iround(v: float) -> int:
    """Agg's iround(v * 256): to 1/256 pixel, halves away from zero."""
    v *= _SCALE
    return int(v - 0.5) if v < 0 else int(v + 0.5)


def _line_cells(x1: int, y1: int, x2: int, y2: int, cells: list) -> None:
    """Agg's rasterizer_cells_aa::line: cover / area of one edge, row by row."""
    dx = x2 - x1
    if abs(dx) >= (16384 << _SHIFT):  # Agg splits very long edges
        cx, cy = (x1 + x2) >> 1, (y1 + y2) >> 1
        _line_cells(x1, y1, cx, cy, cells)
        _line_cells(cx, cy, x2, y2, cells)
        return
    dy = y2 - y1
    ey1, ey2 = y1 >> _SHIFT, y2 >> _SHIFT
    fy1, fy2 = y1 & _MASK, y2 & _MASK
    if ey1 == ey2:
        _hline_cells(ey1, x1, fy1, x2, fy2, cells)
        return
    if dy > 0:
        first, incr, p = _SCALE, 1, (_SCALE - fy1) * dx
    else:
        first, incr, p = 0, -1, fy1 * dx
    ady = abs(dy)
    delta, mod = divmod(p, ady)
    x_from = x1 + delta
    _hline_cells(ey1, x1, fy1, x_from, first, cells)
    ey1 += incr
    if ey1 != ey2:
        lift, rem = divmod(_SCALE * dx, ady)
        mod -= ady
        while ey1 != ey2:
            delta = lift
            mod += rem
            if mod >= 0:
                mod -= ady
                delta += 1
            x_to = x_from + delta
            _hline_cells(ey1, x_from, _SCALE - first, x_to, first, cells)
            x_from = x_to
            ey1 += incr
    _hline_cells(ey1, x_from, _SCALE - first, x2, fy2, cells)


def _hline_cells(ey: int, x1: int, y1: int, x2: int, y2: int, cells: list) -> None:
    """Agg's render_hline: split one row's piece of an edge into cells."""
    if y1 == y2:
        return
    ex1, ex2 = x1 >> _SHIFT, x2 >> _SHIFT
    fx1, fx2 = x1 & _MASK, x2 & _MASK
    if ex1 == ex2:
        delta = y2 - y1
        cells.append((ex1, ey, delta, (fx1 + fx2) * delta))
        return
    dx = x2 - x1
    if dx > 0:
        first, incr, p = _SCALE, 1, (_SCALE - fx1) * (y2 - y1)
    else:
        first, incr, p, dx = 0, -1, fx1 * (y2 - y1), -dx
    delta, mod = divmod(p, dx)
    cells.append((ex1, ey, delta, (fx1 + first) * delta))
    ex1 += incr
    y1 += delta
    if ex1 != ex2:
        lift, rem = divmod(_SCALE * (y2 - y1 + delta), dx)
        mod -= dx
        while ex1 != ex2:
            delta = lift
            mod += rem
            if mod >= 0:
                mod -= dx
                delta += 1
            cells.append((ex1, ey, delta, _SCALE * delta))
            y1 += delta
            ex1 += incr
    delta = y2 - y1
    cells.append((ex1, ey, delta, (fx2 + _SCALE - first) * delta))


def lit_pixels(cells: list, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of non-zero coverage after Agg's scanline sweep (non-zero winding, no gamma).

    Coverage of a pixel is floor(value / 512) in Agg's integer units: a tiny negative
    value still lights the pixel, a positive one needs 1/256 of the pixel.
    """
    height, width = shape[:2]
    if not cells:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    arr = np.asarray(cells, np.int64)
    order = np.lexsort((arr[:, 0], arr[:, 1]))
    arr = arr[order]
    key = arr[:, 1] * (1 << 32) + arr[:, 0]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    x = arr[starts, 0]
    y = arr[starts, 1]
    cover = np.add.reduceat(arr[:, 2], starts)
    area = np.add.reduceat(arr[:, 3], starts)
    row_start = np.r_[True, y[1:] != y[:-1]]
    cum = np.cumsum(cover)
    row_base = np.maximum.accumulate(np.where(row_start, np.arange(len(y)), 0))
    offset = np.r_[0, cum[:-1]][row_base]
    acc = cum - offset  # cover accumulated along the row up to and including the cell
    cell_on = (area != 0) & (_alpha((acc << (_SHIFT + 1)) - area) > 0)
    xs_list, ys_list = [x[cell_on]], [y[cell_on]]
    # spans between a cell and the next cell of the same row carry the accumulated cover
    nxt_same = np.r_[~row_start[1:], False]
    span_from = np.where(area != 0, x + 1, x)
    span_to = np.r_[x[1:], 0]  # exclusive
    has_span = nxt_same & (span_to > span_from) & (_alpha(acc << (_SHIFT + 1)) > 0)
    for a, b, row in zip(span_from[has_span], span_to[has_span], y[has_span], strict=True):
        xs_list.append(np.arange(a, b))
        ys_list.append(np.full(b - a, row))
    xs = np.concatenate(xs_list)
    ys = np.concatenate(ys_list)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return xs[inside], ys[inside]


def _alpha(value: np.ndarray) -> np.ndarray:
    """Agg's calculate_alpha for the non-zero rule: |value >> 9| clipped to 255."""
    return np.minimum(np.abs(value >> (2 * _SHIFT + 1 - 8)), 255)
