"""Winograd F(4x4, 3x3) convolution for the Relax backend (NHWC, stride 1, ungrouped 3x3).

A 3x3 conv computes each 4x4 output tile from a 6x6 input tile with 36 multiplies per
(input, output) channel pair instead of 144: 4x fewer in the GEMM that dominates a ResNet's
3x3 layers, for the price of cheap linear transforms of the input and output tiles
(Lavin & Gray 2015). The weight transform U = G g G^T is done once, here, in numpy, as the
weights are constants: the compiled kernel only reads U.

The TE compute names its stages the way MetaSchedule's CPU winograd rules expect
(`data_pack`, `inverse` with their `schedule_rule` attributes; `bgemm` is a plain batched GEMM
left to multi-level tiling), so tuning gets a search space made for it.
"""
from __future__ import annotations

import numpy as np

TILE = 4  # m: output tile edge
ALPHA = TILE + 3 - 1  # input tile edge for a 3x3 kernel

# Lavin & Gray's matrices for F(4, 3), interpolation points 0, +-1, +-2 (and infinity).
B_T = np.array([
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
], dtype=np.float64)
G = np.array([
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
], dtype=np.float64)
A_T = np.array([
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
], dtype=np.float64)


# Transformed weights are 4x the size of the 3x3 ones (6x6 per channel pair). In a network they
# are read from memory on every run, and past a few MB a conv waits on them longer than the GEMM
# it saves: ResNet's 256- and 512-channel stages (9.4 / 37.7 MB each) at 14x14 and 7x7 maps,
# where the 4x4 output tiles also cover little. Up to 128x128 channels they stay at 2.4 MB.
MAX_CHANNEL_PAIRS = 128 * 128


def eligible(attrs: dict, weight_shape: tuple[int, ...]) -> bool:
    """Whether a conv is one this kernel computes, and one where it pays: 3x3, stride 1,
    ungrouped, at most MAX_CHANNEL_PAIRS (output x input channels)."""
    return (weight_shape[2:] == (3, 3) and attrs["stride"] == 1 and attrs["groups"] == 1
            and weight_shape[0] * weight_shape[1] <= MAX_CHANNEL_PAIRS)


def transform_weight(oihw: np.ndarray) -> np.ndarray:
    """U[eps, nu, ci, co] = (G g G^T)[eps, nu] for each 3x3 filter g = w[co, ci].

    Output channels innermost: the batched GEMM vectorises along them.
    """
    return np.einsum("ak,oikl,bl->abio", G, oihw.astype(np.float64), G).astype(np.float32)


def conv2d_nhwc(data, kernel_pack, padding: int):
    """TE compute: NHWC data, transformed weights (ALPHA, ALPHA, CI, CO) -> NHWC output."""
    from tvm import te, topi
    from tvm.topi.utils import const_matrix

    n, h, w, ci = (int(d) for d in data.shape)
    co = int(kernel_pack.shape[3])
    out_h, out_w = h + 2 * padding - 2, w + 2 * padding - 2
    tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
    tiles = n * tiles_h * tiles_w
    b = const_matrix(B_T.T.astype(np.float32), "B")
    a = const_matrix(A_T.T.astype(np.float32), "A")

    # Pad so that every tile, the last ones included, reads a full ALPHA x ALPHA window.
    extra_h = (tiles_h - 1) * TILE + ALPHA - (h + 2 * padding)
    extra_w = (tiles_w - 1) * TILE + ALPHA - (w + 2 * padding)
    data_pad = topi.nn.pad(data, (0, padding, padding, 0), (0, padding + extra_h, padding + extra_w, 0),
                           name="data_pad", attrs={"schedule_rule": "None"})

    def tile_origin(p):
        return p // (tiles_h * tiles_w), (p // tiles_w) % tiles_h * TILE, p % tiles_w * TILE

    def read_tile(eps, nu, p, c):
        batch, y, x = tile_origin(p)
        return data_pad[batch, y + eps, x + nu, c]

    input_tile = te.compute((ALPHA, ALPHA, tiles, ci), read_tile, name="input_tile",
                            attrs={"schedule_rule": "None"})
    data_pack = _transform(input_tile, b, ALPHA, "data_pack", "conv2d_nhwc_winograd_data_pack")
    rc = te.reduce_axis((0, ci), "ci")
    bgemm = te.compute(
        (ALPHA, ALPHA, tiles, co),
        lambda eps, nu, p, o: te.sum(data_pack[eps, nu, p, rc] * kernel_pack[eps, nu, rc, o], axis=[rc]),
        name="bgemm", attrs={"meta_schedule.write_cache_level": [2]})
    inverse = _transform(bgemm, a, TILE, "inverse", "conv2d_nhwc_winograd_inverse")

    def untile(batch, y, x, o):
        p = batch * tiles_h * tiles_w + y // TILE * tiles_w + x // TILE
        return inverse[y % TILE, x % TILE, p, o]

    return te.compute((n, out_h, out_w, co), untile, name="conv2d_winograd")


def _transform(tiles, matrix, edge: int, name: str, rule: str):
    """out[i, j, p, c] = (M^T X M)[i, j] for each tile X = tiles[:, :, p, c]: a 2-D transform."""
    from tvm import te
    ra = te.reduce_axis((0, ALPHA), "r_a")
    rb = te.reduce_axis((0, ALPHA), "r_b")
    return te.compute(
        (edge, edge, *tiles.shape[2:]),
        lambda i, j, p, c: te.sum(tiles[ra, rb, p, c] * matrix[ra, i] * matrix[rb, j], axis=[ra, rb]),
        name=name, attrs={"schedule_rule": rule})
