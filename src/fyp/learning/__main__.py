"""The learner as a supervised child of ``fyp serve`` (the settings come from the
server, through the environment): ``python -m fyp.learning``."""

from __future__ import annotations

import logging
import os

from fyp.config import Settings
from fyp.learning.learner import main
from fyp.learning.supervisor import PARENT_ENV, SETTINGS_ENV

logging.basicConfig(level=logging.WARNING, format="fyp learner: %(levelname)s %(message)s")
settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
if os.getppid() != int(os.environ.get(PARENT_ENV, "0")):
    raise SystemExit("fyp learner: the server that started it is gone")
main(settings, supervised=True)
