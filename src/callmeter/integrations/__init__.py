"""Sources: adapters that measure third-party SDKs and frameworks into a session.

Each adapter lives in its own module and imports its third-party package itself, so
``import callmeter.integrations`` stays light; import e.g.
:mod:`callmeter.integrations.openai` (needs the ``openai`` extra) to use one.
"""
