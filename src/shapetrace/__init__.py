"""shapetrace: see what a PyTorch network does to its data.

``trace(model, *inputs)`` runs one forward and returns a ``Trace`` (plain data: every module call with its
input and output shapes, parameters and, optionally, functional ops and data-flow edges). Renderers turn a
trace into tables, Graphviz diagrams and plots; ``load`` reads a trace saved as JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .tracer.codec import TraceFormatError
from .tracer.records import FORMAT, Call, Edge, Op, Struct, TensorMeta, Trace, load
from .tracer.user_warnings import ShapetraceWarning

__version__ = "0.1.0"

__all__ = [
    "FORMAT",
    "Call",
    "Edge",
    "ModelBusy",
    "Op",
    "ShapetraceWarning",
    "Struct",
    "TeardownFailed",
    "TensorMeta",
    "Trace",
    "TraceFailed",
    "TraceFormatError",
    "Tracer",
    "UnsupportedModel",
    "__version__",
    "load",
    "profile",
    "trace",
]

if TYPE_CHECKING:
    from .tracer.api import TraceFailed, trace
    from .tracer.capture import TeardownFailed, Tracer, UnsupportedModel
    from .tracer.model_lock import ModelBusy
    from .tracer.timing import profile


def __getattr__(name: str) -> Any:
    # torch is imported on first use, so loading and rendering a saved trace never needs it.
    if name == "trace" or name == "TraceFailed":
        from .tracer import api  # noqa: PLC0415 - torch loads on first use

        return getattr(api, name)
    if name in ("Tracer", "UnsupportedModel", "TeardownFailed"):
        from .tracer import capture  # noqa: PLC0415 - torch loads on first use

        return getattr(capture, name)
    if name == "ModelBusy":
        from .tracer.model_lock import ModelBusy  # noqa: PLC0415 - with the tracer, loaded on first use

        return ModelBusy
    if name == "profile":
        from .tracer.timing import profile  # noqa: PLC0415 - torch loads on first use

        return profile
    raise AttributeError(f"module 'shapetrace' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the ones loaded on first use (``__getattr__``) included, so completion finds them."""
    return sorted(set(globals()) | set(__all__))
