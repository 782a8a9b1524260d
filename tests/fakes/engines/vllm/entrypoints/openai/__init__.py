"""Stand-in engine package for tests (see fake_engine)."""
