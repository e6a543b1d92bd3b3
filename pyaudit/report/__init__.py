"""Renderings of pyaudit's results: terminal tables and JSON documents."""
