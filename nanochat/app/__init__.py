"""`nanochat-app`: a terminal dashboard over the runs on this machine (Textual)."""


def main() -> None:
    from nanochat.app.dashboard import Dashboard
    Dashboard().run()
