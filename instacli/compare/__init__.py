"""``instacli compare``: train several encoder × regressor combinations on the same data, split,
seeds and budget, evaluate them all on the test split next to the baselines, and write
``results.json`` (:mod:`instacli.results`; :mod:`instacli.report` renders it).

Layout of a comparison folder::

    REPORT_DIR/
      results.json                       everything in the table, machine-readable
      report.md, report.html, figures/   written by instacli.report
      runs/<encoder>__<regressor>__seed<k>/   ordinary run folders (instacli evaluate/predict work on them)

An interrupted comparison resumes when started again with the same ``--out``: a finished run folder
(:meth:`instacli.run_folder.RunFolder.state`) is reused (its evaluation's ``metrics.json`` too, when
it is newer than the weights); one with a resumable checkpoint continues from it; anything else is
retrained from scratch. A finished run whose settings differ from the ones asked for now is an error
unless ``overwrite`` (then it is retrained).

Fairness: every combination gets the same data, split, seeds and budget (``epochs`` and/or
``time_budget``); :data:`~instacli.compare.planning.ENCODER_DEFAULTS` holds the few per-encoder
settings that make a CPU budget feasible (frozen pretrained probes), and ``--set ENCODER.KEY=VALUE``
overrides anything.

* :mod:`instacli.compare.planning`: what to run (``--set``, plans, checks, reuse or retrain).
* :mod:`instacli.compare.execution`: running it (training, the too-slow stop, scoring, results.json).
"""

from instacli.compare.execution import CompareReporter, CompareResult, compare
from instacli.compare.planning import (
    DEFAULT_ENCODERS, DEFAULT_REGRESSORS, ENCODER_DEFAULTS, SEED_PRESET_KEY, Plan, parse_overrides, plan_runs,
)

__all__ = [
    "DEFAULT_ENCODERS", "DEFAULT_REGRESSORS", "ENCODER_DEFAULTS", "SEED_PRESET_KEY",
    "CompareReporter", "CompareResult", "Plan", "compare", "parse_overrides", "plan_runs",
]
