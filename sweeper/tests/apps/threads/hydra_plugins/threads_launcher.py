"""A launcher for the tests: each job runs in the thread that launches it, inside the sweeper's
process (the sweeper launches from a thread per trial), as a launcher built on threads would.
Found by Hydra's plugin discovery where this folder is on PYTHONPATH (only the test that uses it)."""

from dataclasses import dataclass

from hydra._internal.core_plugins.basic_launcher import BasicLauncher, BasicLauncherConf
from hydra.core.config_store import ConfigStore


@dataclass
class ThreadsLauncherConf(BasicLauncherConf):
    _target_: str = "hydra_plugins.threads_launcher.ThreadsLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="threads", node=ThreadsLauncherConf, provider="tests")


class ThreadsLauncher(BasicLauncher):
    """Hydra's basic launcher under another name: the sweeper runs it as a launcher of its own."""
