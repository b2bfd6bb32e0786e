"""The HTTP API and status page: FastAPI app (``app``), token auth (``tokens``), write rate limits
(``ratelimit``), Prometheus metrics (``metrics``), the uvicorn server on the appliance's loop
(``server``) and the status page's static files (``static/``)."""
