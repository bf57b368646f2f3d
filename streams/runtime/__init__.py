"""The worker: the Faust app and its agents, one batch through the pipeline, the identity
checkpoint and topic creation."""
