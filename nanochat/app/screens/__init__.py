"""The dashboard's screens: runs, new run, logs, checkpoints, chat, plugins, and the confirmation dialog."""
