"""Winograd F(m x m, 3x3) convolutions for the Relax backend (NHWC, stride 1, ungrouped 3x3).

F(4x4, 3x3) computes each 4x4 output tile from a 6x6 input tile with 36 multiplies per
(input, output) channel pair instead of 144 (F(2x2, 3x3): 16 for 4 outputs instead of 36):
fewer multiplies in the GEMM that dominates a ResNet's 3x3 layers, for the price of cheap
linear transforms of the input and output tiles (Lavin & Gray 2015). The weight transform
U = G g G^T is done once, here, in numpy, as the weights are constants: the compiled kernel
only reads U.

The TE compute names its stages the way MetaSchedule's CPU winograd rules expect
(`data_pack`, `inverse` with their `schedule_rule` attributes; `bgemm` is a plain batched GEMM
left to multi-level tiling), so tuning gets a search space made for it.
"""
from __future__ import annotations

import numpy as np

# Lavin & Gray's matrices (B^T, G, A^T) for F(m, 3), by output tile edge m. F(4, 3) uses the
# interpolation points 0, +-1, +-2 (and infinity): 36 multiplies per 16 outputs. F(2, 3) uses 0,
# +-1: 16 per 4, so a 2.25x smaller GEMM than direct, but its transformed weights are only 16/9
# the size of the 3x3 ones (F(4, 3): 4x), and a 14x14 map splits into whole 2x2 tiles.
MATRICES = {
    4: (np.array([[4, 0, -5, 0, 1, 0],
                  [0, -4, -4, 1, 1, 0],
                  [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0],
                  [0, 4, 0, -5, 0, 1]], dtype=np.float64),
        np.array([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], dtype=np.float64),
        np.array([[1, 1, 1, 1, 1, 0],
                  [0, 1, -1, 2, -2, 0],
                  [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], dtype=np.float64)),
    2: (np.array([[1, 0, -1, 0],
                  [0, 1, 1, 0],
                  [0, -1, 1, 0],
                  [0, 1, 0, -1]], dtype=np.float64),
        np.array([[1, 0, 0],
                  [1 / 2, 1 / 2, 1 / 2],
                  [1 / 2, -1 / 2, 1 / 2],
                  [0, 0, 1]], dtype=np.float64),
        np.array([[1, 1, 1, 0],
                  [0, 1, -1, -1]], dtype=np.float64)),
}


# Transformed weights are read from memory on every run (a network's weights do not fit in the
# cache), and past a few MB a conv waits on them longer than the GEMM it saves: the 2-core machines
# it was measured on read ~8 GB/s. F(4, 3)'s are 4x the 3x3 ones: 2.4 MB up to 128x128 channels
# (ResNet's layer1, layer2), 9.4 MB at 256. F(2, 3)'s are 16/9: 4.2 MB at 256x256 (layer3), but 16.8
# MB at 512x512, where a layer4 conv ran slower than direct: reading its weights alone took as long
# as the direct conv (benchmarks/RESULTS.md, "Why the CPU lowering is what it is").
MAX_CHANNEL_PAIRS = {4: 128 * 128, 2: 256 * 256}


def tile_for(attrs: dict, weight_shape: tuple[int, ...], wide: bool = False) -> int | None:
    """The output tile edge m of the F(m, 3) kernel a conv runs as, or None to keep it direct.

    Only 3x3, stride-1, ungrouped convs, up to MAX_CHANNEL_PAIRS (output x input channels):
    F(4, 3), or with `wide`, F(2, 3) for those a little wider.
    """
    if (
        weight_shape[2:] != (3, 3)
        or attrs["stride"] != 1
        or isinstance(attrs["padding"], tuple)  # its transform pads a square
        or attrs["groups"] != 1
        or attrs.get("dilation", 1) != 1
    ):
        return None
    pairs = weight_shape[0] * weight_shape[1]
    for tile in (4, 2) if wide else (4,):
        if pairs <= MAX_CHANNEL_PAIRS[tile]:
            return tile
    return None


def transform_weight(oihw: np.ndarray, tile: int = 4) -> np.ndarray:
    """U[eps, nu, ci, co] = (G g G^T)[eps, nu] for each 3x3 filter g = w[co, ci].

    Output channels innermost: the batched GEMM vectorises along them.
    """
    g = MATRICES[tile][1]
    return np.einsum("ak,oikl,bl->abio", g, oihw.astype(np.float64), g).astype(np.float32)


def conv2d_nhwc(data, kernel_pack, padding: int):
    """TE compute: NHWC data, transformed weights (alpha, alpha, CI, CO) -> NHWC output; the
    tile edge m follows from alpha = m + 2."""
    from tvm import te, tirx, topi
    from tvm.topi.utils import const_matrix

    n = data.shape[0]  # symbolic in a library built for any batch
    n = int(n) if isinstance(n, tirx.IntImm) else n
    h, w, ci = (int(d) for d in data.shape[1:])
    alpha, co = int(kernel_pack.shape[0]), int(kernel_pack.shape[3])
    tile = alpha - 2
    b_t, _, a_t = MATRICES[tile]
    out_h, out_w = h + 2 * padding - 2, w + 2 * padding - 2
    tiles_h, tiles_w = -(-out_h // tile), -(-out_w // tile)
    tiles = n * tiles_h * tiles_w
    b = const_matrix(b_t.T.astype(np.float32), "B")
    a = const_matrix(a_t.T.astype(np.float32), "A")

    # Pad so that every tile, the last ones included, reads a full alpha x alpha window.
    extra_h = (tiles_h - 1) * tile + alpha - (h + 2 * padding)
    extra_w = (tiles_w - 1) * tile + alpha - (w + 2 * padding)
    data_pad = topi.nn.pad(data, (0, padding, padding, 0), (0, padding + extra_h, padding + extra_w, 0),
                           name="data_pad", attrs={"schedule_rule": "None"})

    def tile_origin(p):
        return p // (tiles_h * tiles_w), (p // tiles_w) % tiles_h * tile, p % tiles_w * tile

    def read_tile(eps, nu, p, c):
        batch, y, x = tile_origin(p)
        return data_pad[batch, y + eps, x + nu, c]

    input_tile = te.compute((alpha, alpha, tiles, ci), read_tile, name="input_tile",
                            attrs={"schedule_rule": "None"})
    data_pack = _transform(input_tile, b, alpha, "data_pack", "conv2d_nhwc_winograd_data_pack")
    rc = te.reduce_axis((0, ci), "ci")
    bgemm = te.compute(
        (alpha, alpha, tiles, co),
        lambda eps, nu, p, o: te.sum(data_pack[eps, nu, p, rc] * kernel_pack[eps, nu, rc, o], axis=[rc]),
        name="bgemm", attrs={"meta_schedule.write_cache_level": [2]})
    inverse = _transform(bgemm, a, tile, "inverse", "conv2d_nhwc_winograd_inverse")

    def untile(batch, y, x, o):
        p = batch * tiles_h * tiles_w + y // tile * tiles_w + x // tile
        return inverse[y % tile, x % tile, p, o]

    return te.compute((n, out_h, out_w, co), untile, name="conv2d_winograd")


def _transform(tiles, matrix, edge: int, name: str, rule: str):
    """out[i, j, p, c] = (M^T X M)[i, j] for each tile X = tiles[:, :, p, c]: a 2-D transform."""
    from tvm import te
    alpha = int(tiles.shape[0])
    ra = te.reduce_axis((0, alpha), "r_a")
    rb = te.reduce_axis((0, alpha), "r_b")
    return te.compute(
        (edge, edge, *tiles.shape[2:]),
        lambda i, j, p, c: te.sum(tiles[ra, rb, p, c] * matrix[ra, i] * matrix[rb, j], axis=[ra, rb]),
        name=name, attrs={"schedule_rule": rule})
