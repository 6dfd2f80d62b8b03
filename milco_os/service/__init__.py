"""The HTTP service (FastAPI): ``milco-os serve``."""
