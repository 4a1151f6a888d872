"""Training with 2D RoPE: MiniMind-size pretraining and fine-tuning of HF models.

`data` packs multi-branch examples (rope2d coordinates and masks), `sources` makes
them from a corpus or the suites, `loop` is the one accelerate training loop,
`job` runs a whole training (pretrain or finetune), `record` writes train.json and
the checkpoint, `model` and `tokenizer` build a MiniMind-style model from scratch.
"""
