"""The names a spec cannot give, because the generated PyTorch module needs them: one place for
the front end, which refuses them where the spec writes them, and for the torch backend, whose
namespaces (`naming.Namespace`) rename the ones they can (a parameter `self` becomes `self_`).

tests/test_codegen.py checks the member lists against the installed torch.
"""
from __future__ import annotations

import builtins
import keyword

# Labels become attributes of an nn.Module in the generated source: these would shadow its members.
MODULE_MEMBERS = frozenset("""
T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda double
dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule
half ipu load_state_dict modules mtia named_buffers named_children named_modules named_parameters
parameters register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook
register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict
to to_empty train training type xpu zero_grad
""".split())
# A dotted label's parts are keys of the containers holding it (nn.ModuleDict, nn.Sequential):
# ModuleDict refuses a key that names one of its methods (`f.keys`) when the module is built.
CONTAINER_MEMBERS = frozenset("append clear extend insert items keys pop update values".split())
# Submodules of a block that shortcut legalization creates. A user policy may name its own
# container instead of `downsample` (torchvision's RegNet: `proj`); the block takes it by that name.
DEFAULT_SHORTCUT = "downsample"
SHORTCUT_MODULES = frozenset({DEFAULT_SHORTCUT, "gate"})
# Module-level names of the generated file: its imports and helpers. A policy is a helper
# function named after itself, so it cannot take one of these.
HELPERS = frozenset({"annotations", "OrderedDict", "torch", "F", "Tensor", "nn", "projection", "DropPath",
                     "ZeroPadShortcut", "build"})
# Locals of the generated methods, beside the spec's own names.
LOCALS = frozenset({"self", "x", "out", "identity", "t"})
# What a generated name must never be: Python's own names, the module's, the methods' locals.
PYTHON = frozenset(keyword.kwlist) | frozenset(dir(builtins))
# What no class, parameter or variable of the generated module may be (`naming.Namespace`
# turns one into `self_`): the above, and `downsample`, the parameter a block is handed.
GENERATED = PYTHON | LOCALS | HELPERS | {"downsample"}


def python_private(name: str) -> bool:
    """Names Python treats specially: `__x` is mangled inside a class body (a keyword argument
    `__x=` in the network's class would not reach the block's `__x`), and dunders such as
    `__class__` or `__debug__` break `super()` or do not compile."""
    return name.startswith("__")
