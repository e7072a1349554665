"""Episodes: multi-turn rollouts against an environment (docs/episodes.md).

- ``tokens``: one episode as one append-only token sequence (sampled ids verbatim, environment turns appended);
- ``tools``: Python functions offered to the model, through the chat template or a system prompt;
- ``tool_calls``: tool calls found in generated text;
- ``sandbox``: a tool call run in a subprocess with limits;
- ``play``: one episode at the level of messages (scripted tests; the reference for the batched loop).
"""
