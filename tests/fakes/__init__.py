"""Fake upstream providers for tests: each speaks one provider's real wire protocol on 127.0.0.1 and can be
told to fail (see runner.py)."""
