"""``alloop serve``: a long-running process driving one or more projects.

- :mod:`alloop.serve.schedule` - the ``[serve]`` section as APScheduler triggers;
- :mod:`alloop.serve.webhooks` - the ASGI app (Starlette): ``GET /healthz`` and
  ``POST /webhooks/label-studio``, which only *wakes* a project's loop;
- :mod:`alloop.serve.service` - one worker thread per project running ``Controller.run`` under
  the project lease, the scheduler, the HTTP server (uvicorn) and graceful shutdown.

Nothing here is imported by ``import alloop``: the heavy parts load when ``alloop serve`` starts.
"""
