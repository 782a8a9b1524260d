"""Stand-in for `python -m tensorrt_llm.commands.serve` (see fake_engine)."""

import fake_engine

if __name__ == "__main__":
    fake_engine.main("tensorrt_llm.commands.serve")
