"""`nanochat-app`: a terminal dashboard for the runs on this machine (Textual).

    nanochat-app [--home DIR]
"""
import argparse
import os


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="nanochat-app", description="The nanochat dashboard: runs, checkpoints, "
                                     "chat, plugins and logs in the terminal.")
    parser.add_argument("--home", metavar="DIR", help="the nanochat home to show (default: NANOCHAT_HOME or the user data folder)")
    args = parser.parse_args(argv)
    if args.home:
        os.environ["NANOCHAT_HOME"] = os.path.abspath(os.path.expanduser(args.home))  # children inherit it
    from nanochat.app.app import NanochatApp
    NanochatApp().run()
