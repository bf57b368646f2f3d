"""Scores -> alerts and throttle commands: the policy file (config.py) and the pure episode
transition (episodes.py)."""
