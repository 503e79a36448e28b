"""nanochat: train your own ChatGPT-like model end to end.

Importing this package stays cheap (no torch): the CLI and the plugin listing start fast.
"""
import pluggy

__version__ = "0.1.0"

# Plugins decorate their hook functions with this marker.
hookimpl = pluggy.HookimplMarker("nanochat")

__all__ = ["hookimpl", "__version__"]
