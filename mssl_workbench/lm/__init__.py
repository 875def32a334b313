"""Matrix cross-entropy for causal language models: data, the fine-tuning task and its command."""
