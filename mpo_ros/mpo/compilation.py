"""Optional ``torch.compile`` of the learner's hot path, with a fallback that never stops training.

Why only one function: profiling an update at HalfCheetah sizes shows most of its time in the sampled
target-critic pass (N x 2B rows through the critic, no gradient), and there mostly in element-wise passes
(LayerNorm, tanh, ELU) that eager PyTorch runs one at a time over ~10 MB tensors. Inductor fuses them into
one loop per layer. The rest of the update works on B rows and is dominated by per-op overhead, which
compilation of the backward pass would attack at a much larger compile time and risk.

Compilation needs a working C++ toolchain on CPU. A user who turns it on on a machine without one should get
a warning in the log and a slower run, not a crash an hour into training: the first failure switches the
wrapper to eager for good. A genuine error in the function is re-raised by the eager retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["CompiledOrEager"]

log = logging.getLogger(__name__)


class CompiledOrEager:
    """Call ``fn`` through ``torch.compile`` when ``enabled``; on the first failure, fall back to eager."""

    def __init__(self, fn: Callable[..., Any], name: str, enabled: bool) -> None:
        self._eager = fn
        self._name = name
        self._compiled: Callable[..., Any] | None = None
        self.mode = "eager"
        if enabled:
            import torch._inductor.config as inductor_config

            # A worker pool per process buys nothing on a few cores and leaves processes behind on a crash.
            inductor_config.compile_threads = 1
            self._compiled = torch.compile(fn, dynamic=False)
            self.mode = "compiled"

    def __call__(self, *args: Any) -> Any:
        if self._compiled is None:
            return self._eager(*args)
        try:
            return self._compiled(*args)
        except Exception as exc:  # any compiler failure must degrade, not stop training
            log.warning(
                "torch.compile of %s failed (%s: %s); continuing in eager mode (set compile: false to "
                "silence this)",
                self._name,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            self._compiled = None
            self.mode = "eager (compile failed)"
            return self._eager(*args)
