"""The Skip2-LoRA papers' fine-tuning methods, by their lower-case hyphenated names."""

from .base import Method, PhaseTimer
from .network_methods import FtAll, FtAllLora, FtBias, FtLast, LoraAll, LoraLast
from .skip_methods import QuantSkip2Lora, Skip2Lora, SkipAdapters, SkipLora

__all__ = ["METHODS", "method_class", "Method", "PhaseTimer", "SkipAdapters"]

METHODS = {cls.name: cls for cls in (FtAll, FtLast, FtBias, FtAllLora, LoraAll, LoraLast,
                                     SkipLora, Skip2Lora, QuantSkip2Lora)}


def method_class(name: str):
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None
