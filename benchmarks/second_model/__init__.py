"""A second digits DiT, trained differently from ``smoothcache.reference``: a benchmark fixture.

``model.load()`` and ``model.scheduler()`` give the model and its DDIM scheduler; ``train.py``
trains it and ``check.py`` measures caching methods on it (``README.md``).
"""
