"""`python -m gateway.processes <process> --workers N`: what manage.py serve and serve_http exec
into. Kept this small on purpose: a prepare worker (spawned) imports the main module again, and
should find nothing here to load."""

import importlib
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    process = importlib.import_module(f"gateway.processes.{sys.argv[1]}")
    process.main(sys.argv[2:])
