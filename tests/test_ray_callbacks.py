"""Ray Tune's ``python/ray/tune/tests/test_callbacks.py``, import swapped.

Both of Ray's tests: a ``CallbackList`` saves the state of its stateful
callbacks (``get_state``/``set_state``) into a folder and restores it, and
saves nothing when none has state. (``Tuner.restore`` restoring that state
end to end: ``test_restore_steered.py``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tuned_client.tune.callback import Callback, CallbackList


class StatefulCallback(Callback):
    CKPT_FILE_TMPL = "test-callback-state-{}.json"

    def __init__(self) -> None:
        self.counter = 0

    def on_trial_result(self, iteration: int, trials: Any, trial: Any, result: Any, **info: Any) -> None:  # noqa: E501
        self.counter += 1

    def get_state(self) -> dict[str, Any] | None:
        return {"counter": self.counter}

    def set_state(self, state: dict[str, Any]) -> None:
        self.counter = state["counter"]


def test_callback_list_with_stateful_callback(tmp_path: Path) -> None:
    """Checks that a callback list saves and restores all callbacks contained
    inside it."""

    callbacks = CallbackList([Callback(), StatefulCallback()])
    for i in range(3):
        callbacks.on_trial_result(iteration=i, trials=None, trial=None, result=None)

    callbacks.save_to_dir(str(tmp_path))

    assert list(tmp_path.glob(CallbackList.CKPT_FILE_TMPL.format("*")))
    assert callbacks.can_restore(str(tmp_path))

    restored_callbacks = CallbackList([Callback(), StatefulCallback()])
    restored_callbacks.restore_from_dir(str(tmp_path))

    assert restored_callbacks._callbacks[1].counter == 3  # type: ignore[attr-defined]


def test_callback_list_without_stateful_callback(tmp_path: Path) -> None:
    """If no callbacks within a CallbackList are stateful, then nothing
    should be saved."""

    callbacks = CallbackList([Callback(), Callback()])
    callbacks.save_to_dir(str(tmp_path))

    assert not list(tmp_path.glob(CallbackList.CKPT_FILE_TMPL.format("*")))
    assert not callbacks.can_restore(str(tmp_path))

    with pytest.raises(RuntimeError):
        callbacks.restore_from_dir(str(tmp_path))
