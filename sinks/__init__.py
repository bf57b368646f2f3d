"""Delivery to the outside world: signed webhooks and Slack, their formatting, the retry
policy and per-destination routing. Imports nothing of meterguard.streams."""
