"""The validation score of a checkpoint on a run's own held-out validation crops (same config, same haze)."""
import sys
import yaml
from training.trainer import Trainer, resolve_config

config = yaml.safe_load(open(sys.argv[1]))
config.update(init=sys.argv[2], out="/tmp/val_probe", steps=1)
trainer = Trainer(resolve_config(config))
print(sys.argv[2], "val PSNR %.2f SSIM %.4f" % trainer.validate())
