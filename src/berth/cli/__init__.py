"""The ``berth`` command line: argv → Docker Engine API calls → docker-like output.

No business logic lives here: every verb is a client of berthd (or any Docker-API daemon)
over its unix socket. ``main.py`` dispatches; one module per group of verbs; ``client.py`` is
the HTTP client, ``template.py`` the ``--format`` engine, ``render.py`` the tables.
"""
