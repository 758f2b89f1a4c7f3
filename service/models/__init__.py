"""The models a process serves: registry.py (the table and its atomic swap),
loading.py (verify, runtime, smoke test, timing), watcher.py (poll + Redis notices)."""
