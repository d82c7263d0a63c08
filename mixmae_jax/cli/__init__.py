"""What every command shares: a quiet start, one flag dialect with `--help` that lists the
command's own flags, configs found by name, and one `error:` line for what a user can fix.

The lowest layer of the package: it imports nothing else of it, so every command (training,
conversion, benchmarks, experiments) starts the same way.
"""
