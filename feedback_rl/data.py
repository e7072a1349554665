"""Public: rows in (files, ``datasets``, generators), prompts rendered once, and feedback built from rows
or judgments in the core's one way."""
from feedback_rl.rows.refs import DataRef, GeneratedData, SourcedData
from feedback_rl.loop.feedback import candidate_pairs, encode_text_rollouts, from_rows as feedback_from_rows, to_pairs
from feedback_rl.modeling.chat import encode_prompt, prompt_text, prompt_turns, render_prompt
from feedback_rl.rows.dataset import TEXT_OR_TURNS, Dataset, Turns, load as load_dataset
from feedback_rl.rows.datasources import DataSource

__all__ = ["Dataset", "Turns", "TEXT_OR_TURNS", "load_dataset", "DataRef", "GeneratedData", "SourcedData",
           "DataSource", "render_prompt", "encode_prompt", "prompt_text", "prompt_turns", "feedback_from_rows",
           "to_pairs", "candidate_pairs", "encode_text_rollouts"]
