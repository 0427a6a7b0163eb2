"""Probes: one small class per thing measured around each module call, dispatched by ``tracer.engine``.

* ``shapes.ShapeProbe`` — one ``Call`` per call: names, inputs, kwargs and outputs as value trees with tensor
  ids, failures (feeds ``flow.DataFlow``);
* ``ops.OpProbe`` — functional ops between modules and data-flow edges (a ``TorchFunctionMode``);
* ``opcount.OpCountProbe`` — how many torch functions ran inside each call;
* ``flops.FlopProbe`` — inclusive FLOPs per call (``FlopCounterMode`` snapshots, recurrent formulas);
* ``memory.PeakMemoryProbe`` — CUDA peak memory allocated per call;
* ``timing.TimerProbe`` — a clock read (plus a profiler range or CUDA events) at each call's start and end;
* ``finite.FiniteProbe`` — NaN and Inf in each call's outputs, and where the first came from (``check_finite``).

A probe owns what it records; the merge into a ``Trace`` happens after the forward.
"""
