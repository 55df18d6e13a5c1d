"""The end-of-run warning summary: distinct fmtrain warnings with their counts."""

from __future__ import annotations

import logging

from fmtrain.engine.warning_summary import collect_warnings, format_warning_summary


def test_distinct_warnings_of_every_fmtrain_logger_are_counted_and_listed():
    with collect_warnings() as seen:
        logging.getLogger("fmtrain.data").warning("sequence %r refused: %s", "a", "short")
        logging.getLogger("fmtrain.data").warning("sequence %r refused: %s", "a", "short")
        logging.getLogger("fmtrain").warning("collapse suspected at step %d", 40)
        logging.getLogger("fmtrain").info("not a warning")
        logging.getLogger("elsewhere").warning("not ours")
    logging.getLogger("fmtrain").warning("after the run: not counted")
    assert seen == {"sequence 'a' refused: short": 2, "collapse suspected at step 40": 1}
    text = format_warning_summary(seen)
    assert text.splitlines()[0] == "3 warning(s) during this run, 2 distinct:"
    assert "  2 x sequence 'a' refused: short" in text


def test_a_clean_run_says_so():
    with collect_warnings() as seen:
        pass
    assert format_warning_summary(seen) == "run finished without warnings"
