"""Coming from RouteLLM: its server command line and its ``Controller``, served by this project's router and gateway.

The one place that composes both services (the services never import each other,
nor this package): ``routestack-routellm`` takes RouteLLM's ``openai_server`` flags,
and ``routellm_compat.controller.Controller`` takes its ``Controller`` arguments.
"""
