"""Stand-in for `python -m vllm.entrypoints.grpc_server` (see fake_engine)."""

import fake_engine

if __name__ == "__main__":
    fake_engine.main("vllm.entrypoints.grpc_server")
