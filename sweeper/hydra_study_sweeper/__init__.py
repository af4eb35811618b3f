"""hydra-study-sweeper: an Optuna sweeper for any Hydra app. The job's side is `hydra_study_sweeper.job`."""
