"""Tokenize, detokenize and tokenizer listing: ``/v1/tokenize``, ``/v1/detokenize``, ``/v1/tokenizers``."""
