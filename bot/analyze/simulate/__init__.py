"""The lifecycle simulator: what can happen to an object between paths.

    simulate_source(files, entries, settings)  run C text directly (bot simulate)
    SimulatorCheck().run(ctx, settings)        the analysis-stage check (pre vs post)
    format_trace(trace)                        one column per CPU/worker, as text

Pipeline: extract (C -> lifecycle program), scenario (actors, callbacks,
initial state), explore (interleavings with reduction and bounds), explain
(shortest counterexample as a Trace). See docs/simulator.md.
"""

from __future__ import annotations

from bot.analyze.simulate.check import SimulatorCheck
from bot.analyze.simulate.explain import format_trace
from bot.analyze.simulate.run import SimResult, SimViolation, simulate_source

__all__ = ["SimResult", "SimViolation", "SimulatorCheck", "format_trace", "simulate_source"]
