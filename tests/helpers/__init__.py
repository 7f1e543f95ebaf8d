"""Shared test helpers: a real HTTP server with fault injection (httpserver),
gpg-made signing keys (gpg) and a signed Alpine-style release mirror (mirror)."""
