"""gRPC channel options shared by the servers and the client; a module of its own so that the
slim client package (clients/python) carries it without the server code."""

# Stage services receive whole songs as streams of chunks; single messages stay small.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # gRPC's default reconnect backoff grows to 120 s: a service back after a minute down would
    # then wait ~15 s more for the channel to try again (measured); 2 s keeps recovery prompt.
    ("grpc.max_reconnect_backoff_ms", 2000),
]
