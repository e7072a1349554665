"""The OpenAI-compatible server, in the core so training can serve the live policy with it (docs/episodes.md,
"Any agent program") and ``frl serve`` serves a saved model with it:

- ``protocol``: request bodies checked, response and chunk shapes (OpenAI's, with vLLM's token-id fields);
- ``limits``: what one request may cost (body size, prompts past the context);
- ``jobs``: a request as the engine sees it, and the :class:`~feedback_rl.serving.jobs.Engine` interface;
- ``app``: the routes, errors, API key, and a server thread for loopback use;
- ``generate_route``: vLLM's token-in ``/inference/v1/generate`` (verifiers' training client);
- ``sessions``: the token sequence of each session, append-only, as an environment episode's.
"""
