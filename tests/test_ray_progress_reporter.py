"""Ray Tune's ``python/ray/tune/tests/test_progress_reporter.py``, import swapped.

Nearly all of Ray's file tests private helpers of its reporters by name
(``_fair_filter_trials``, ``_trial_progress_str``, ``_best_trial_str``,
``_time_passed_str``, ``TuneReporterBase._current_best_trial``, and
``reporter._progress_str`` from overridden ``report`` methods), or compares a
whole driver's output with Ray's trial ids and paths (``testEndToEndReporting``,
``testVerboseReporting``). What uses public names only is
``testAddMetricColumn``; tuned's console output is tested against Ray's
layout in ``test_callbacks_and_console.py``.
"""

from __future__ import annotations

import unittest

from tuned_client.tune import CLIReporter


class ProgressReporterTest(unittest.TestCase):
    def testAddMetricColumn(self) -> None:
        """Tests edge cases of add_metric_column."""

        # Test list-initialized metric columns.
        reporter = CLIReporter(metric_columns=["foo", "bar"])
        with self.assertRaises(ValueError):
            reporter.add_metric_column("bar")

        with self.assertRaises(ValueError):
            reporter.add_metric_column("baz", "qux")

        reporter.add_metric_column("baz")
        self.assertIn("baz", reporter._metric_columns)

        # Test default-initialized (dict) metric columns.
        reporter = CLIReporter()
        reporter.add_metric_column("foo", "bar")
        self.assertIn("foo", reporter._metric_columns)
