"""Running: how the planned jobs run. The job store and its claims, the executor, the jobs themselves, the MLflow
recorder, the machine's workspace, progress, store locations and the launch of workers."""
