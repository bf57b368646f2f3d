"""Every worker's HTTP: API routes, the throttle feed (SSE), operator actions and the
dashboard."""
