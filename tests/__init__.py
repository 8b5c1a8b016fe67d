"""The test suite: unit tests of one piece, and end-to-end tests on 127.0.0.1 (marked slow)."""
