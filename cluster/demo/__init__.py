"""The demo services and definitions of `coordinator demo`."""
