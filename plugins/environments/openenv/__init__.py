"""The ``openenv`` environment: OpenEnv environments, in-process or behind their server, as episodes.
The plugin is ``plugin.py``; ``sessions.py`` is how it talks to OpenEnv (the only place that imports it)."""
