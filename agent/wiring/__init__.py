"""Per-feature wiring used by `agent.app` only: builds a feature's objects from the config,
adds its HTTP routes and owns its background tasks (pushed on `agent.stack`)."""
