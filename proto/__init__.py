"""Wire contract with the engines: stubs generated from ``smg-grpc-proto`` (see ``proto/generate.py``)."""
