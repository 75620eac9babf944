"""Planning: what runs. Grid and space files, datasets, run specs and their identity, the job graph, cost and length
checks. Imports no torch and no MLflow, so a grid is read, checked and planned in a fraction of a second."""
