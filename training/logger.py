"""Logging set-up shared by the training scripts (open_clip_train's `logger.setup_logging`)."""

import logging


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(main_process: bool = True) -> None:
    """INFO logs of the package on the main process, warnings only on the others; an application that configured
    logging itself keeps its handlers."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    logging.getLogger("audiomosaic").setLevel(logging.INFO if main_process else logging.WARNING)
