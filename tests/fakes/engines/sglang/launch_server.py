"""Stand-in for `python -m sglang.launch_server` (see fake_engine)."""

import fake_engine

if __name__ == "__main__":
    fake_engine.main("sglang.launch_server")
