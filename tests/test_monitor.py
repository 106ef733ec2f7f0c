"""The p-value monitor of the service (serving.monitor): quiet on calibrated traffic, alarmed by a shift."""

from __future__ import annotations

import numpy as np

from serving.monitor import ALARM_P, MIN_IMAGES, WINDOW, PValueMonitor


def first_alarm(monitor: PValueMonitor, pvalues: np.ndarray, per_request: int = 1) -> int | None:
    """How many of `pvalues`, served `per_request` at a time, it takes for the alarm to rise (None: it never does)."""
    for start in range(0, len(pvalues), per_request):
        if monitor.observe(list(pvalues[start : start + per_request])).alarm:
            return start + per_request
    return None


def test_calibrated_traffic_raises_no_alarm_and_anomalies_do_not_count_as_drift():
    """Uniform p-values (normal parts under an honest calibration): 50,000 images served one by one raise no alarm;
    nor do 1% of true anomalies with tiny p-values on top (flagged, and not part of the uniformity test)."""
    rng = np.random.default_rng(0)
    quiet = [first_alarm(PValueMonitor(0.01), rng.uniform(size=5_000)) for _ in range(10)]
    assert quiet == [None] * 10
    with_anomalies = np.where(rng.uniform(size=5_000) < 0.01, 1e-6, rng.uniform(size=5_000))
    assert first_alarm(PValueMonitor(0.01), with_anomalies) is None
    state = PValueMonitor(0.01).observe(list(rng.uniform(size=10)))
    assert (state.images, state.alarm, state.uniformity_test_p) == (10, False, 1.0)  # too few to test


def test_a_shift_of_the_normal_images_raises_the_alarm_within_a_window():
    """After 400 calibrated images, every image's score grows a little (p-values Beta(0.6, 1): 6% below the 1% target,
    the rest no longer uniform): the alarm rises within one window of shifted images."""
    rng = np.random.default_rng(1)
    monitor = PValueMonitor(0.01)
    assert first_alarm(monitor, rng.uniform(size=400)) is None
    shifted = rng.beta(0.6, 1.0, size=WINDOW)
    arrived = first_alarm(monitor, shifted)
    assert arrived is not None and arrived <= WINDOW
    state = monitor.state()
    assert (
        state.alarm
        and min(state.uniformity_test_p, state.flagged_test_p) < ALARM_P
        and state.images == WINDOW >= MIN_IMAGES
    )


def test_more_flagged_parts_than_promised_raise_the_alarm():
    rng = np.random.default_rng(2)
    monitor = PValueMonitor(0.01)
    flagged_often = np.where(
        rng.uniform(size=WINDOW) < 0.08, rng.uniform(0, 0.01, size=WINDOW), rng.uniform(size=WINDOW)
    )
    assert first_alarm(monitor, flagged_often) is not None
    assert monitor.state().flagged_test_p < ALARM_P and monitor.state().flagged_share > 0.04
