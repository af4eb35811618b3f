"""The one module that reaches into hydra-optuna-sweeper. Its config dataclass (the keys users know),
its search-space grammar and its trial configuration are used as they are; everything else of the
sweep is this package's own. The stock plugin's implementation module is private (`_impl`) and a
release candidate: a change there touches this file only.

Imported by the plugin registration, so it stays light: `_impl` (which imports Optuna) loads on
first use.
"""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf as SweeperConf  # noqa: F401 - re-exported


def params_from_overrides(lines: list[str]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Distributions, fixed parameters and deletions (`~key`) from override lines, in the stock
    plugin's grammar (interval, tag(log, ...), choice, range, int(...))."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    return create_params_from_overrides(lines)


def grid_choices(distribution: Any) -> list[Any]:
    """The values a GridSampler walks for a discrete distribution (ValueError for a continuous one)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    return list(OptunaSweeperImpl._to_grid_sampler_choices(distribution))


class TrialConfigurator:
    """Turns an asked trial into its job's overrides exactly as the stock plugin does: suggest each
    distribution, record fixed parameters as user attributes, run the `custom_search_space`
    function, refuse overlaps."""

    def __init__(self, custom_search_space: str | None, params: Any) -> None:
        from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

        # held, not inherited from: only its trial configuration and params formatting are used
        self._impl = OptunaSweeperImpl(None, "minimize", None, None, 1, 1, 0.0, custom_search_space, params)

    def preset_lines(self) -> list[str]:
        """The sweeper's `params` as override lines."""
        self._impl._process_searchspace_config()
        return self._impl._parse_sweeper_params_config()

    def overrides(self, trial: Any, space: Any, config: Any) -> tuple[str, ...]:
        from .conditions import active

        self._impl.config = config  # what custom_search_space is called with
        distributions = active(trial, space.distributions, space.fixed, space.conditions)
        [overrides] = self._impl._configure_trials([trial], distributions, space.fixed, list(space.fixed_overrides))
        return tuple(overrides)
