"""The HTTP face of the vector store: Qdrant's REST API over ``VectorService``.

It translates and holds no engine logic: ``routes/`` declares every operation,
``schemas.py`` the request bodies, ``app.py`` the ASGI application and
``server.py`` runs it under uvicorn.
"""
