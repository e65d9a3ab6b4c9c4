"""The bench's peer: glassbox's product reads in FastAPI + asyncpg + orjson on uvicorn.

`profiling.peer.launch` starts it beside glassbox (`start_peer`, `start_instrumented_peer`);
`profiling.peer.app` is the service itself and imports nothing of glassbox. Both need the
`bench` dependency group (`make bench` installs it).
"""
