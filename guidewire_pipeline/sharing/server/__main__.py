"""``python -m guidewire_pipeline.sharing.server``: the same as ``guidewire-pipeline share-server``."""

import sys

from guidewire_pipeline.sharing.cli import main_share_server

if __name__ == "__main__":
    sys.exit(main_share_server())
