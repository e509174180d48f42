"""``tuned web``: a live page of every experiment, served by a process of its own.

The daemon opens no port. This process is one more client on the daemon's
Unix socket (one subscription to every event, requests for the rest) and
serves the page on 127.0.0.1 only, to whoever holds the token it prints:

- ``feed``: the daemon connection, folding events into the ``model``;
- ``model``: experiments, trials, learning curves and usage samples, and the
  snapshots and deltas pushed to pages;
- ``curves``: the curves from before our subscription, read from result files;
- ``guard``: the token, Host and Origin checks every request passes;
- ``app``: the starlette routes (page, live WebSocket, server-sent events, logs,
  cancel);
- ``serve``: the command, on uvicorn.
"""
