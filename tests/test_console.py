"""The library logs its progress notes; the command line shows them as plain lines."""

import logging

from rich.logging import RichHandler

from steer_away.console import console, show_library_messages


def test_library_messages_reach_the_console_once_with_markup_rendered():
    logger = logging.getLogger("steer_away")
    before = list(logger.handlers)
    logger.handlers[:] = [h for h in before if not isinstance(h, RichHandler)]  # a CLI test may have added it
    try:
        show_library_messages()
        show_library_messages()  # a second call adds no second handler
        assert sum(isinstance(h, RichHandler) for h in logger.handlers) == 1
        with console.capture() as captured:
            logging.getLogger("steer_away.evaluation.sweep.runners").info("[yellow]3 of 4 cells already done[/yellow]")
        assert captured.get().strip() == "3 of 4 cells already done"
    finally:
        logger.handlers[:] = before
