"""bfloat16 convolutions on CPUs with AVX512-BF16: bf16 weights and activations, fp32 sums.

One `vdpbf16ps` multiplies 32 bf16 pairs into 16 fp32 sums: a 512-bit FMA's work twice over,
so a conv whose time is its multiplies can run in up to half the fp32 time. MetaSchedule finds
it through a tensor intrinsic (`DOT_16x2`: 16 output channels x 2 input channels), tiling each
conv around it (`MultiLevelTilingWithIntrin`) the way its x86 VNNI rules do for int8.

What stands between TVM 0.27 and that instruction: its LLVM codegen has no bf16 arithmetic.
Before codegen every bf16 value is widened to fp32 (`BF16ComputeLegalize`) and stored as
uint16 (`BF16StorageLegalize`), so no `<32 x bfloat>` operand can be written in TIR. The
intrinsic therefore loads the operands as int32 (a pair of bf16 is one int32, which TVM loads
as it is and tags for LLVM's alias analysis), and calls `resdsl_dpbf16ps`: four lines of LLVM IR,
imported into the module (`pragma_import_llvm`), that bitcast them to bfloat vectors and run the
instruction. LLVM inlines it, and keeps the sums in registers across the unrolled tile.

The weights are packed at compile time as (O/16, KH, KW, I/2, 16, 2): each intrinsic call reads
one contiguous 64-byte row of them. An odd number of input channels (an RGB stem's 3) gets a zero
channel; grouped convs, and those of fewer or other than 16k output channels, stay fp32.
"""
from __future__ import annotations

import numpy as np

DOT_16x2 = "resdsl_dot_16x2_bf16"
LANES, PAIR = 16, 2

# acc[i] += a[2i] * b[2i] + a[2i+1] * b[2i+1], with `b` one (input channel) pair broadcast to every
# lane: lane i is output channel i. linkonce_odr: each tensorized call site imports it, and the
# linker keeps one copy.
_LLVM_IR = """
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>,
                                                       <32 x bfloat>)
define linkonce_odr <16 x float> @resdsl_dpbf16ps(<16 x float> %acc, <16 x i32> %a,
                                                 <16 x i32> %b) alwaysinline {
  %x = bitcast <16 x i32> %a to <32 x bfloat>
  %y = bitcast <16 x i32> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %x,
                                                           <32 x bfloat> %y)
  ret <16 x float> %r
}
"""


def supported(target) -> bool:
    """Whether `target`'s CPU has AVX512-BF16, so its LLVM backend has `vdpbf16ps`."""
    from tvm.target import codegen
    return target.kind.name == "llvm" and bool(codegen.llvm_cpu_has_features("avx512bf16", target))


def require(target) -> None:
    """Refuse a bf16 build for a CPU without AVX512-BF16, saying what to do instead."""
    if not supported(target):
        from ..diagnostics import OptionError
        cpu = target.attrs.get("mcpu") or target.kind.name
        raise OptionError(f"the CPU `{cpu}` has no AVX512-BF16 instructions for bf16 convs",
                          ("precision", "cpu"),
                          hint="build in fp32, or for a CPU that has them, such as znver5 or "
                               "sapphirerapids")


def keep_packed(mod):
    """Take the bf16 convs' weights off the layout-free list: they are packed already, in the
    order `DOT_16x2` reads them, and RewriteLayout cannot repack through their `o // 16` index."""
    from tvm import tirx
    for gv, func in list(mod.functions.items()):
        if isinstance(func, tirx.PrimFunc) and "layout_free_buffers" in func.attrs and _has_bf16_conv(func):
            mod[gv] = func.without_attr("layout_free_buffers")
    return mod


def _has_bf16_conv(func) -> bool:
    return any(len(getattr(p, "shape", ())) == 6 and str(getattr(p, "dtype", "")) == "bfloat16"
               for p in func.params)


def packs(weight_shape: tuple[int, ...], groups: int) -> bool:
    """Whether a conv's OIHW weight splits into (16 output, 2 input) channel tiles."""
    return groups == 1 and weight_shape[0] % LANES == 0 and weight_shape[1] % PAIR == 0


def paired(oihw: np.ndarray) -> np.ndarray:
    """`oihw` with a zero input channel added where it has an odd number (an RGB stem's 3): each
    multiply takes input channels in pairs, and a zero one adds nothing."""
    if oihw.shape[1] % PAIR == 0:
        return oihw
    return np.concatenate([oihw, np.zeros((oihw.shape[0], 1, *oihw.shape[2:]), oihw.dtype)], axis=1)


def pack_weight(oihw: np.ndarray) -> np.ndarray:
    """(O, I, KH, KW) fp32 -> (O/16, KH, KW, I/2, 16, 2) bf16, rounded to nearest even."""
    import ml_dtypes
    o, i, kh, kw = oihw.shape
    packed = oihw.reshape(o // LANES, LANES, i // PAIR, PAIR, kh, kw).transpose(0, 4, 5, 2, 1, 3)
    return np.ascontiguousarray(packed).astype(ml_dtypes.bfloat16)


def conv2d_nhwc(data, packed, stride: tuple[int, int], padding: tuple[int, int, int, int],
                dilation: tuple[int, int]):
    """TE compute: NHWC bf16 data, packed bf16 weights -> NHWC fp32 output, summed in fp32.

    The padded copy is a stage of its own that no rule inlines (`schedule_rule` None): inlined,
    its bounds test would sit inside the products and nothing would match `DOT_16x2`."""
    from tvm import te, topi
    from tvm.topi.utils import get_const_tuple

    n = data.shape[0]
    h, w, ci = get_const_tuple(data.shape[1:])
    oc_tiles, kh, kw, _, _, _ = get_const_tuple(packed.shape)
    top, left, bottom, right = padding
    out_h = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if any(padding):
        data = topi.nn.pad(data, (0, top, left, 0), (0, bottom, right, 0), name="data_pad",
                           attrs={"schedule_rule": "None"})
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, ci), "rc")
    return te.compute(
        (n, out_h, out_w, oc_tiles * LANES),
        lambda b, y, x, o: te.sum(
            data[b, y * stride[0] + ry * dilation[0], x * stride[1] + rx * dilation[1], rc].astype("float32")
            * packed[o // LANES, ry, rx, rc // PAIR, o % LANES, rc % PAIR].astype("float32"),
            axis=[ry, rx, rc]),
        name="conv2d_bf16")


def register() -> None:
    """Register `DOT_16x2` (once per process: schedules that name it are replayed by tuning,
    selection and every build)."""
    from tvm.s_tir import TensorIntrin
    try:
        TensorIntrin.get(DOT_16x2)
        return
    except Exception:  # noqa: BLE001 - TVM raises a bare error for an unknown name
        pass
    desc, impl = _intrinsic()
    TensorIntrin.register(DOT_16x2, desc, impl)


def _intrinsic():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((PAIR,), "bfloat16", offset_factor=1),
             b: T.Buffer((LANES, PAIR), "bfloat16", offset_factor=1),
             c: T.Buffer((LANES,), "float32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:PAIR], b[0:LANES, 0:PAIR])
            T.writes(c[0:LANES])
            for i in T.serial(0, LANES):
                for k in T.serial(0, PAIR):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + T.cast(a[vk], "float32") * T.cast(b[vi, vk], "float32")

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((PAIR,), "bfloat16", offset_factor=1),
             b: T.Buffer((LANES, PAIR), "bfloat16", offset_factor=1),
             c: T.Buffer((LANES,), "float32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:PAIR], b[0:LANES, 0:PAIR])
            T.writes(c[0:LANES])
            # int32 views of the bf16 pairs: TVM widens every bf16 value it loads to fp32, but
            # loads an int32 as it is, and tags it for alias analysis (a load inside the imported
            # function would have no tag, and be read again after every store of a sum).
            pairs = T.decl_buffer((1,), "int32", data=a.data, elem_offset=a.elem_offset // PAIR)
            rows = T.decl_buffer((LANES,), "int32", data=b.data, elem_offset=b.elem_offset // PAIR)
            with T.attr(0, "pragma_import_llvm", _LLVM_IR):
                c[T.ramp(T.int32(0), 1, LANES)] = T.call_pure_extern(
                    "float32x16", "resdsl_dpbf16ps", c.vload([0], dtype="float32x16"),
                    rows.vload([0], dtype="int32x16"), T.broadcast(pairs[0], LANES))

    return desc, impl


def vectorizes_intrinsic(sch) -> bool:
    """Whether a loop around a block to be tensorized with `DOT_16x2` is vectorized.

    MetaSchedule vectorizes each block's innermost spatial loops, and where the output channels
    are tiled 2+ blocks of 16 wide that loop is the one around the intrinsic: a 16-lane call
    inside a vectorized loop, which TVM cannot build ("Cannot broadcast lanes=16"). About 40% of
    the candidates drawn for a conv are such; refused before the build, they cost no trial."""
    from tvm.tirx import ForKind
    pending = list(sch.get_child_blocks(sch.get_sblock("root")))
    while pending:
        block = pending.pop()
        pending.extend(sch.get_child_blocks(block))
        if sch.get(block).annotations.get("meta_schedule.auto_tensorize") == DOT_16x2 and any(
                sch.get(loop).kind == ForKind.VECTORIZED for loop in sch.get_loops(block)):
            return True
    return False


def _unvectorized_intrinsic():
    """A postprocessor that refuses the candidates `vectorizes_intrinsic` finds."""
    from tvm.s_tir.meta_schedule.postproc import PyPostproc
    from tvm.ir.utils import derived_object

    @derived_object
    class RefuseVectorizedIntrinsic(PyPostproc):
        def _initialize_with_tune_context(self, context) -> None:
            pass

        def apply(self, sch) -> bool:
            return not vectorizes_intrinsic(sch)

        def clone(self):
            return RefuseVectorizedIntrinsic()

    return RefuseVectorizedIntrinsic()


def space():
    """MetaSchedule's CPU design space with `DOT_16x2` tiling tried first on every conv it fits
    (the plain rules still schedule everything else), and the postprocessor that applies it."""
    from tvm.s_tir import meta_schedule as ms
    register()
    rules = []
    for rule in ms.ScheduleRule.create("llvm"):
        if type(rule) is ms.schedule_rule.MultiLevelTiling:
            rules.append(ms.schedule_rule.MultiLevelTilingWithIntrin(
                DOT_16x2, structure="SSRSRS", max_innermost_factor=64,
                reuse_write=ms.schedule_rule.ReuseType(req="may", levels=[1, 2], scope="global")))
        rules.append(rule)
    postprocs = []
    for postproc in ms.Postproc.create("llvm"):
        if type(postproc) is ms.postproc.RewriteLayout:
            postprocs.append(_unvectorized_intrinsic())
            postprocs.append(ms.postproc.RewriteTensorize(vectorize_init_loop=True))
        postprocs.append(postproc)
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs=postprocs, mutator_probs="llvm")
