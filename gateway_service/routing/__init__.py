"""Which model answers: what a model name means (catalog), the gateway's own rules, tool-loop turns, the router client."""
