"""A software prefetch for numba kernels: ``prefetch(array, index)`` asks the CPU to bring the cache line of
``array[index]`` closer without waiting for it (LLVM's ``llvm.prefetch``; no effect on results).

The FH merge reads the union-find entries of each edge's two pixels in weight order, that is at random; the
entries of the edges a few places ahead are known from the sorted edge list, so they can be on their way
while the current edge's dependent finds run (measured ≈ 7 % faster merging at 500 px, see
docs/benchmarks.md). ``index`` is not checked: the caller keeps it inside the array (a prefetch of a bad
address does not fault, but nothing is gained).
"""

from __future__ import annotations

import llvmlite.binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# Typed-pointer LLVM (before 17) mangles the overloaded intrinsic as p0i8, opaque-pointer LLVM as p0.
_NAME = "llvm.prefetch.p0" if llvmlite.binding.llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"


@intrinsic
def prefetch(typingctx, array, index):  # noqa: ARG001 (numba's intrinsic signature)
    """``prefetch(array, index)``: read prefetch of ``array[index]`` into all cache levels."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        ary = context.make_array(array_type)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, array_type, ary, [args[1]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), _NAME)
        # (address, read = 0, locality 3 = keep in all levels, data cache = 1)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen
