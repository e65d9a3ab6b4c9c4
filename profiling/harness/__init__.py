"""The measurement and test harness: one home for what bench, lab, levers and the tests share.

- processes: free ports, polling with a deadline, a clean environment, child processes
- gunicorn: start the API (or another WSGI app) as `make serve` does, wait for it, stop it
- git_tree: another commit of this repository as a temporary folder (the bench's baseline)
- wrk: find it (or say how to install it), run it, read the summary its Lua scripts print
- otlp: an OTLP/HTTP receiver that decodes the real payloads, or only counts them
- flask_cli: run the project's `flask --app service` commands (migrate, seed, api-keys)
- progress: a progress bar on a terminal, plain lines otherwise
"""
