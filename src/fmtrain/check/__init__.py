"""`fmtrain check`: build a recipe, pull real batches, run a step, report every problem.

Each problem names the recipe key to change and how. Errors make `check` exit non-zero.
"""

from fmtrain.check.problems import CheckReport, Problem

__all__ = ["CheckReport", "Problem"]
