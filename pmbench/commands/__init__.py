"""CLI sub-commands, one module each; every module exposes `register(app)`.

`pmbench.cli` imports every module here, so adding a command is adding a file.
"""
