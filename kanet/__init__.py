"""The `kanet` command."""
