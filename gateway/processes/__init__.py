"""The gateway's processes, one module each: `all_in_one` (manage.py serve: the embedded
gateway in one process), `http_server` (manage.py serve_http) and `grpc_server` (manage.py
serve_grpc). `serving` holds what they share: starting the ingest pipeline in the process that
serves, and the one way it stops."""
