"""Causal language models: their data and answer scoring, the run configuration and presets, and the fine-tuning run (the loss is in objectives.mce, the GSM8K command in evaluation.gsm8k)."""
