"""Reply streams: replies that outlive the HTTP connection that asked for them."""
