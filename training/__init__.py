"""KA-Net in PyTorch: the network, checkpoints, and (in later modules) training."""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .models import MIN_FRAME_SIZE, PAD_MULTIPLE, KANet, pad_to_multiple

__all__ = ["KANet", "PAD_MULTIPLE", "MIN_FRAME_SIZE", "pad_to_multiple", "load_checkpoint", "save_checkpoint", "CheckpointError"]
