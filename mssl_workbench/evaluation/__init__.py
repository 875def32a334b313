"""Evaluation protocols on trained runs: linear probe, k-NN, label-free selection, semi-supervised and fine-tuning, COCO transfer, GSM8K for language models."""
