"""What the router and the gateway share, and nothing more.

Server bootstrap (listen, health, reflection, TLS, drain on SIGTERM), the TOML +
env settings base, TLS credentials, bearer tokens, tracing, the CLI error
wrapper, the reader of upstream error bodies and the error base. It imports
neither service, and neither service imports the other: a test walks the
imports and fails on any such edge.
"""
