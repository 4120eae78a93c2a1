"""graphnas: neural architecture search on graph-encoded search spaces, run on Ray."""

import nas.darts.mixed  # noqa: F401  (registers the DARTS mixed op)
import nas.ops_cells  # noqa: F401  (registers the cell ops)
import nas.ops_classic  # noqa: F401  (registers lrn, pad_shortcut, scale, l2_normalize)
import nas.ops_roi  # noqa: F401  (registers roi_pool)
import nas.ops_spatial  # noqa: F401  (registers stn, upsample, conv_transpose)
import nas.ops_video  # noqa: F401  (registers the video ops)
from nas.builder import GraphModule, build, count_flops, count_params
from nas.export import export  # the function; its package stays importable as nas.export.<module>
from nas.graph import ArchGraph, ArchitectureError, arch_id, from_json, infer_shapes, to_json
from nas.graph import load as load_architecture
from nas.graph import save as save_architecture
from nas.inflate import InflateError, inflate, inflate_model, inflate_state_dict
from nas.ops import OpError, register_op
from nas.optimize import History, optimize
from nas.registry import get_space, list_spaces, register_space
from nas.space import Categorical, Ordinal, Preset, SearchSpace, SpaceError

__all__ = [
    "ArchGraph", "ArchitectureError", "Categorical", "GraphModule", "History", "OpError", "Ordinal", "Preset",
    "SearchSpace", "SpaceError", "arch_id", "build", "count_flops", "count_params", "export", "from_json",
    "get_space",
    "InflateError", "infer_shapes", "inflate", "inflate_model", "inflate_state_dict",
    "list_spaces", "load_architecture", "optimize", "register_op", "register_space",
    "save_architecture", "to_json",
]
