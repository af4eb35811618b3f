"""The wire between the sweeper and its jobs: every name both sides use, in one place.

A job learns its trial from environment variables the sweeper sets with Hydra's
`hydra.job.env_set` (a URL with a password through the sweeper's own environment instead, never a
file). A job answers, and the sweeper reads that answer once when the job ends (jobs.Shape.ended):

- its return value: the objective (Hydra's contract with a task);
- its reporter's word, stored on its trial: the steps' values (Optuna's intermediate values) and,
  when it stopped the job, why (PRUNED_ATTR, TIMEOUT_ATTR, with LAST_VALUE_ATTR);
- the app's own results file in its folder, when the sweeper's `results_file` names one.

While it runs, a job also touches JOB_FILE in its folder at each step: the watchdog's sign of life,
not part of its answer. Trials carry the user attributes named here (the dashboard shows them).
"""

from __future__ import annotations

PREFIX = "HYDRA_STUDY_SWEEPER_"

# what a job is handed (environment variables)
TRIAL_ENV = PREFIX + "TRIAL"  # the trial's number
STUDY_ENV = PREFIX + "STUDY"  # the study's name
STORAGE_ENV = PREFIX + "STORAGE"  # absolute storage URL; unset for an in-memory study
PRUNER_ENV = PREFIX + "PRUNER"  # the pruner's config as JSON
TIMEOUT_ENV = PREFIX + "TRIAL_TIMEOUT"  # trial_timeout in seconds, counted from the reporter's start
REPEAT_ENV = PREFIX + "REPEAT"  # "K/N": the job runs seed K (from 0) of its trial's N (repeats)
OUTAGE_ENV = PREFIX + "OUTAGE_TIMEOUT"  # seconds the job's reporter waits out a lost database server
STACK_ENV = PREFIX + "STACK"  # a stacked job's trial numbers, comma separated
TOKEN_ENV = PREFIX + "JOB_TOKEN"  # this launch's token, which the job writes into JOB_FILE
MLFLOW_URI_ENV = PREFIX + "MLFLOW_URI"  # the tracking server (may hold a password: environment only)
MLFLOW_RUNS_ENV = PREFIX + "MLFLOW_RUNS"  # trial number=run id, comma separated (a stack has several)
TENSORBOARD_ENV = PREFIX + "TENSORBOARD"  # the study's event folder; a trial's is NUMBER/ inside
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"  # the GPU slot a job gets (CUDA's own name)
RUNG_ENV = PREFIX + "RUNG"  # multi-fidelity: the rung the job runs (its steps are stored from RUNG * RUNG_STEPS)
SECRET_ENVS = (STORAGE_ENV, MLFLOW_URI_ENV)  # may hold a password: set in the environment, never written

# what a job leaves in its folder
JOB_FILE = ".sweeper-job.json"  # {"host", "pid", "start", "token"}, written at the start, touched at each step

# a trial's user attributes
WORKER_ATTR = "worker"  # host:pid of the sweeper process running it
FAIL_ATTR = "fail_reason"  # why it failed
PRUNED_ATTR = "pruned_reason"  # set by the job's reporter when the pruner said stop
TIMEOUT_ATTR = "timeout_reason"  # set by the job's reporter when the trial ran past trial_timeout
LAST_VALUE_ATTR = "last_value"  # a stopped trial's last reported value
RETRY_ATTR = "retry_of"  # a queued retry: the number of the trial it retries
DIR_ATTR = "dir"  # the trial's job folder
SEEDS_ATTR = "seeds"  # the seeds a repeated trial ran
RUNGS_ATTR = "rungs"  # multi-fidelity: [{"rung", "at", "value", "seconds"}] of each rung it finished

# multi-fidelity: rung k's step s is the trial's step k * RUNG_STEPS + s; its result is stored at
# the rung's last step, k * RUNG_STEPS + RUNG_STEPS - 1
RUNG_STEPS = 1000

# a study's user attributes
COMMAND_ATTR = "app_command"  # how the app is started (python -m PKG / python FILE)
