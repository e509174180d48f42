"""Ray's ``ray.train.tests.util`` checkpoint helpers, which its Tune tests import.

The ported tests (``test_ray_*``) import them from here, as Ray's import them
from there, so a test reads as Ray's with only the import line changed.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from typing import Any

from tuned_client.tune import Checkpoint


@contextlib.contextmanager
def create_dict_checkpoint(data: dict[str, Any]) -> Iterator[Checkpoint]:
    with tempfile.TemporaryDirectory() as tmpdir:
        with open(os.path.join(tmpdir, "data.pkl"), "wb") as f:
            pickle.dump(data, f)
        yield Checkpoint.from_directory(tmpdir)


def load_dict_checkpoint(checkpoint: Checkpoint) -> Any:
    with (  # Ray nests the two
        checkpoint.as_directory() as checkpoint_dir,
        open(os.path.join(checkpoint_dir, "data.pkl"), "rb") as f,
    ):
        return pickle.load(f)
