"""The PNG plots beside a sweep's summary, read from the figures' data."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState, create_trial


def test_the_history_plot_shows_pruned_trials_where_they_stopped():
    """Pruned trials are most of a pruning sweep: the history draws each at its last reported value,
    apart from the completed ones and from the best so far, which only completed trials make."""
    from hydra_study_sweeper.plots import history_figure, pyplot
    from hydra_study_sweeper.summary import Layout, rows_from_study

    study = optuna.create_study(direction="maximize")
    study.add_trials(
        [
            create_trial(value=0.5, params={}, distributions={}, intermediate_values={0: 0.3, 1: 0.5}),
            create_trial(state=TrialState.PRUNED, params={}, distributions={}, intermediate_values={0: 0.2, 1: 0.25}),
            create_trial(value=0.6, params={}, distributions={}),
            create_trial(state=TrialState.PRUNED, params={}, distributions={}, intermediate_values={0: 0.1}),
            create_trial(state=TrialState.PRUNED, params={}, distributions={}),  # stopped before a report
        ]
    )
    fig = history_figure(rows_from_study(study, []), Layout(["accuracy"], ["maximize"]))
    try:
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        assert list(lines["pruned (its last value)"].get_xdata()) == [1, 3]
        assert list(lines["pruned (its last value)"].get_ydata()) == [0.25, 0.1]
        assert list(lines["completed"].get_xdata()) == [0, 2] and list(lines["best so far"].get_ydata()) == [0.5, 0.6]
    finally:
        pyplot().close(fig)
