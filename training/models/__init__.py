from .kanet import MIN_FRAME_SIZE, PAD_MULTIPLE, KANet, pad_to_multiple

__all__ = ["KANet", "PAD_MULTIPLE", "MIN_FRAME_SIZE", "pad_to_multiple"]
