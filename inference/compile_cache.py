"""What a compiled step's first fit in a process can reuse from earlier processes.

A fresh process pays for Inductor twice over what the graph needs: it compiles the graph
anew unless its on-disk FX graph cache is consulted, which Inductor skips ("No shape env")
for a graph traced outside Dynamo (:func:`shape_env`); and it checks which vector ISAs
(AVX-512, AVX2) the C++ compiler can build and load by compiling a probe and starting one
Python child per ISA to ``dlopen`` it (~0.6 s each), every process (:func:`known_vector_isa`).
Measured on the coin (docs/compiled.md, "Compile time").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import torch


def shape_env() -> contextlib.AbstractContextManager:
    """A tracing context whose fake-tensor mode has a static ``ShapeEnv``: with it
    ``compile_fx`` looks the graph up in Inductor's FX graph cache (and stores it there)."""
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    mode = FakeTensorMode(shape_env=ShapeEnv(), static_shapes=True, allow_non_fake_inputs=True)
    return tracing(TracingContext(mode))


def _candidates() -> list[str]:
    """The vector ISAs this x86 CPU's flags allow (what Inductor then probes), unprobed."""
    from torch._inductor import cpu_vec_isa

    flags = cpu_vec_isa.x86_isa_checker()
    return [
        str(isa)
        for isa in cpu_vec_isa.supported_vec_isa_list
        if all(flag in flags for flag in str(isa).split())
    ]


def _isa_record(candidates: list[str]) -> Path:
    """Where the verdict of this machine's ISA probes is kept: Inductor's cache folder, under
    a name keyed by torch's version, the C++ compiler and the candidate ISAs."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    key = json.dumps([torch.__version__, get_cpp_compiler(), candidates])
    name = "bayesdl-vec-isa-" + hashlib.sha256(key.encode()).hexdigest()[:16] + ".json"
    return Path(cache_dir()) / name


@contextlib.contextmanager
def known_vector_isa() -> Iterator[None]:
    """While Inductor compiles: when an earlier process found every candidate ISA buildable
    and loadable here, tell Inductor so (``cpp.vec_isa_ok``) instead of probing again; else
    let it probe and record what it found. ``$TORCHINDUCTOR_VEC_ISA_OK`` still decides when
    set, and a failed probe is never skipped (the record keeps ``False``)."""
    import torch._inductor.config as inductor_config
    from torch._inductor import cpu_vec_isa

    x86 = platform.machine() in ("x86_64", "AMD64") and sys.platform == "linux"
    if inductor_config.cpp.vec_isa_ok is not None or not x86:
        yield
        return
    try:
        candidates = _candidates()
        record = _isa_record(candidates)
        known = json.loads(record.read_text()) if record.is_file() else None
    except (OSError, ValueError, RuntimeError):
        record, known = None, None
    if known is True:
        with inductor_config.patch({"cpp.vec_isa_ok": True}):
            yield
        return
    yield
    if record is not None and known is None:
        # valid_vec_isa_list: the candidates that passed the probes just run (cached)
        ok = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()] == candidates
        with contextlib.suppress(OSError):
            record.parent.mkdir(parents=True, exist_ok=True)
            tmp = record.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(ok))
            tmp.replace(record)
