"""Training milco-mini: sparse alignment pretraining (SAP) and sparse contrastive training (SCT)."""
