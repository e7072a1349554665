"""Built-in environments: episodes the model plays turn by turn (docs/episodes.md)."""
