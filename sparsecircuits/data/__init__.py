"""Data: the character tokenizer, the standard-library corpus and the binary next-token tasks."""
