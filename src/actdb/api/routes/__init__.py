"""The HTTP API's routes, one ``APIRouter`` per area.

``meta`` (/healthz, /v1/info, the API docs), ``catalog`` (models, checkpoints, reps),
``rows`` (a rep's rows and token labels), ``compare`` (/v1/compare, /v1/results), ``sql``
and ``plots``. Shared state reaches a route through the dependencies of :mod:`.deps`;
response helpers are in :mod:`.formats`. :func:`actdb.api.app.create_app` includes them.
"""
