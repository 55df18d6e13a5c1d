"""The `fmtrain` command shows its INFO progress messages, on the stderr of the moment."""

import logging

import pytest

from fmtrain.cli.messages import show_progress_messages as _show_progress_messages
from tests.conftest import TINY_RECIPE


@pytest.fixture
def fresh_fmtrain_logger():
    log = logging.getLogger("fmtrain")
    saved = (log.handlers[:], log.level)
    log.handlers.clear()
    yield log
    log.handlers[:], log.level = saved


def test_info_records_reach_the_current_stderr_once(fresh_fmtrain_logger, capsys):
    _show_progress_messages()
    _show_progress_messages()  # a second command in the same process adds no second copy
    logging.getLogger("fmtrain.data").info("preparing %s", "a.tsv")
    assert capsys.readouterr().err == "[fmtrain] preparing a.tsv\n"


def test_a_handler_the_user_set_up_is_left_alone(fresh_fmtrain_logger, capsys):
    mine = logging.NullHandler()
    fresh_fmtrain_logger.addHandler(mine)
    _show_progress_messages()
    assert fresh_fmtrain_logger.handlers == [mine]
    logging.getLogger("fmtrain").info("quiet")
    assert "quiet" not in capsys.readouterr().err


def test_top_level_help_lists_every_command_once(capsys):
    from fmtrain.cli import main

    main(["--help"])
    out = capsys.readouterr().out
    assert out.count("driven by YAML recipes") == 1  # the description, printed once
    for command in ("check", "probe", "embed", "demo", "fit/validate"):
        assert f"  {command}" in out


def test_lightning_advertisements_are_dropped_and_its_real_notices_kept(caplog):
    import logging

    from fmtrain.cli.messages import quiet_third_party_notices

    quiet_third_party_notices()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        logger.info("\N{ELECTRIC LIGHT BULB} Tip: For seamless cloud logging, try installing X")
        logger.info("`Trainer.fit` stopped: `max_steps=3` reached.")
    assert [r.getMessage() for r in caplog.records] == [
        "`Trainer.fit` stopped: `max_steps=3` reached."
    ]


def test_a_recipe_built_from_python_with_args_does_not_warn_about_sys_argv(monkeypatch):
    # a benchmark script has arguments of its own in sys.argv; the args it passes are the
    # command, and Lightning's reminder that sys.argv is then ignored is noise to it
    import warnings

    from fmtrain.recipe import build_recipe

    monkeypatch.setattr("sys.argv", ["quality_oct.py", "--budget_min", "30"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = build_recipe(["--config", str(TINY_RECIPE), "--trainer.logger=false"], run=False)
    assert cli.model is not None
    assert not [w for w in caught if "args parameter" in str(w.message)]
