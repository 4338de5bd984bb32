"""A long-running process tunes its garbage collector once its startup is done."""

from __future__ import annotations

import gc

from common.processes import gc_tune


def test_startup_objects_are_frozen_and_young_ones_collected_less_often():
    before = gc.get_threshold()
    try:
        made_at_startup = [object() for _ in range(10)]
        assert gc_tune(10000) is True
        assert gc.get_threshold() == (10000, before[1], before[2])
        assert gc.get_freeze_count() > 0
        assert made_at_startup  # still alive: frozen, not collected
        gc.collect()  # a full collection leaves the frozen ones alone (and works)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_zero_leaves_the_collector_as_python_sets_it():
    before = gc.get_threshold()
    assert gc_tune(0) is False
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
