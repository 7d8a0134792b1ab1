"""Optional torch interop.

torch is never imported by ``import qwen2audio``: a value can only be a torch tensor if the caller
imported torch already, so checks look in ``sys.modules``; torch is imported here only to make
tensors the caller asked for (``return_tensors="pt"``, or torch inputs to ``generate``).

Tensors this package makes are of :class:`HostTensor` (a ``torch.Tensor`` subclass) whose
``.to("cuda")`` / ``.cuda()`` keep the tensor where it is when torch has no usable CUDA. The engine
reads inputs from host memory wherever the model computes, so code written for transformers that
moves its inputs to the GPU (``inputs.input_ids.to("cuda")``) runs unchanged on a CPU machine.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

_HOST_TENSOR: Any = None


def torch_module() -> Any:
    """torch when the caller has imported it, else None (never imports it)."""
    return sys.modules.get("torch")


def is_tensor(value: Any) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(value, torch.Tensor)


def is_dtype(value: Any) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(value, torch.dtype)


def is_device(value: Any) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(value, torch.device)


def to_numpy(value: Any) -> Any:
    """A torch tensor as a NumPy array (on the host; bfloat16 and float16 widened to float32, which is
    what the engine computes with); anything else unchanged."""
    if not is_tensor(value):
        return value
    torch = torch_module()
    tensor = value.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    # as_subclass: NumPy conversion of a subclass goes through __torch_function__ for nothing.
    return tensor.as_subclass(torch.Tensor).numpy()


def _cuda_usable(torch: Any) -> bool:
    return bool(torch.cuda.is_available())


def _is_cuda(value: Any) -> bool:
    if isinstance(value, str):
        return value == "cuda" or value.startswith("cuda:")
    if is_device(value):
        return value.type == "cuda"
    return False


def host_tensor_class() -> Any:
    """The ``torch.Tensor`` subclass of the tensors this package returns (made on first use)."""
    global _HOST_TENSOR
    if _HOST_TENSOR is None:
        import torch

        class HostTensor(torch.Tensor):
            """A torch tensor from qwen2audio. Where torch has no usable CUDA, ``.to("cuda")`` and
            ``.cuda()`` leave it on the CPU instead of failing: the engine reads host memory, so pasted
            transformers code that moves inputs to the GPU keeps working. Everything else is torch's."""

            def to(self, *args: Any, **kwargs: Any) -> Any:
                if not _cuda_usable(torch):
                    args = tuple(arg for arg in args if not _is_cuda(arg))
                    if _is_cuda(kwargs.get("device")):
                        kwargs = {key: value for key, value in kwargs.items() if key != "device"}
                    if not args and not {key for key in kwargs if key not in ("non_blocking", "copy")}:
                        return self
                return super().to(*args, **kwargs)

            def cuda(self, *args: Any, **kwargs: Any) -> Any:
                if not _cuda_usable(torch):
                    return self
                return super().cuda(*args, **kwargs)

        HostTensor.__module__, HostTensor.__qualname__ = __name__, "HostTensor"
        _HOST_TENSOR = HostTensor
    return _HOST_TENSOR


def as_tensor(array: Any, device: Any = None) -> Any:
    """A NumPy array (or list) as a :class:`HostTensor`, sharing memory where it can; on ``device``
    (a torch device of the caller's input) when that is not the CPU."""
    import torch

    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch warns on read-only memory (it cannot express it)
        array = array.copy()
    tensor = torch.from_numpy(array).as_subclass(host_tensor_class())
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        tensor = tensor.to(device)
    return tensor
