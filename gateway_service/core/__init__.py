"""The chat core every client API shares: validate, admit, dispatch to an upstream, stream; the exchange of a request."""
