"""A run dir's files: config and metrics, checkpoints, the train state's arrays, prediction tables."""
