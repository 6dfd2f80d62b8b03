"""Run a milco-os torch model (``forward(ids, mask) -> (pivot, echo)``) behind the encoder interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from milco_os.runtime.encoder import GPU_BATCHING, SparseEncoder
from milco_os.types import ModelInfo


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchEncoder(SparseEncoder):
    def __init__(self, info: ModelInfo, tokenizer: Any, model: torch.nn.Module, *, device: str | None = None,
                 **kwargs: Any) -> None:
        self.device = pick_device(device)
        if self.device.type == "cuda":
            kwargs = {**GPU_BATCHING, **kwargs}  # larger batches unless the caller chose
        super().__init__(info, tokenizer, **kwargs)
        self.model = model.to(self.device).eval()

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        with torch.inference_mode():
            pivot, echo = self.model(ids, mask)
        return pivot.float().cpu().numpy(), echo.float().cpu().numpy()

    def _forward_dense(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        with torch.inference_mode():
            pivot, echo, dense = self.model(ids, mask, dense=True)
        return pivot.float().cpu().numpy(), echo.float().cpu().numpy(), dense.float().cpu().numpy()
