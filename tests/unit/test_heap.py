"""Freezing the long-lived objects: kept out of later collections, yet a replaced model is freed."""

from __future__ import annotations

import gc
import weakref

from mlops.heap import freeze_long_lived


class Model:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_frozen_objects_are_skipped_and_a_replaced_models_cycle_is_freed_at_the_next_freeze() -> None:
    try:
        old = Model()
        gone = weakref.ref(old)
        freeze_long_lived()
        assert gc.get_freeze_count() > 0
        del old
        gc.collect()
        assert gone() is not None, "a frozen cycle is out of the collector's view"
        freeze_long_lived()  # the next model is in use: the old one's cycle goes
        assert gone() is None
    finally:
        gc.unfreeze()
