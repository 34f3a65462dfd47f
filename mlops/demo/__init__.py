"""The whole loop on one machine: ``mlops demo`` and the end-to-end tests run it through here.

- :mod:`~mlops.demo.command`: ``mlops demo`` itself (its own data directory and ports, the summary);
- :mod:`~mlops.demo.run`: :class:`LoopRun`, the engine: history, initial model, live stream, the
  loop's retraining and promotion, progress lines;
- :mod:`~mlops.demo.processes`: the ``mlops`` processes a run starts and stops;
- :mod:`~mlops.demo.report`: the loop report (:func:`summarise`, HTML with plots);
- :mod:`~mlops.demo.window_tables`: its tables: every window linking its Evidently report, and the
  versions' realised metrics side by side.
"""

from mlops.demo.command import as_environment, demo_overrides, run_demo
from mlops.demo.report import LoopSummary, summarise, write_report
from mlops.demo.run import LoopRun, RunOutcome

__all__ = ["LoopRun", "LoopSummary", "RunOutcome", "as_environment", "demo_overrides", "run_demo", "summarise",
           "write_report"]
